// Command vault builds a HashiCorp Vault server from its Go module so the
// tests and the demo can run `vault server -dev` on machines without a
// packaged Vault. It is a test-bed tool, not part of the product.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
