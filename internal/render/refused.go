package render

import (
	"fmt"
	"regexp"
	"strings"
)

// Refused consul-template functions and why podlease leaves each out. A
// template that calls one fails to parse, and the error says which and why.
var refused = map[string]string{}

func refuse(reason string, names ...string) {
	for _, n := range names {
		refused[n] = reason
	}
}

const (
	whyConsul = "it reads Consul; podlease talks only to Vault"
	whyNomad  = "it reads Nomad; podlease talks only to Vault"
)

func init() {
	refuse(whyConsul, "datacenters", "exportedServices", "key", "keyExists", "keyOrDefault", "ls", "safeLs",
		"node", "nodes", "partitions", "peerings", "service", "connect", "services", "tree", "safeTree",
		"caRoots", "caLeaf", "byKey", "byPort", "byTag", "byMeta")
	refuse(whyNomad, "nomadServices", "nomadService", "nomadVarList", "nomadVarListSafe", "nomadVar", "nomadVarExists")
	refuse("it reads a file of the container that renders, at every render; mount that file into the app instead", "file")
	refuse("it runs a program at render time; podlease runs no commands", "plugin")
	refuse("it writes a file of its own beside the template's; podlease writes one file per --secret, atomically", "writeToFile")
	refuse("it reads the network interfaces of the container that renders, not the app's", "sockaddr")
	refuse("it dumps Go values for debugging, in a layout that is not a data format", "spew_dump", "spew_printf", "spew_sdump", "spew_sprintf")
	refuse("it issues a certificate with a Vault write at every render and keeps the key in a file of its own; podlease only reads", "pkiCert")
}

// RefusedFunction returns why podlease leaves out the consul-template
// function name, or "" if it does not.
func RefusedFunction(name string) string {
	if r := refused[name]; r != "" {
		return r
	}
	if strings.HasPrefix(name, "sprig_") {
		return "the sprig library is not included; the built-in functions cover joining, splitting, trimming, encoding, hashing and arithmetic"
	}
	return ""
}

var undefinedFunc = regexp.MustCompile(`function "([^"]+)" not defined`)

// explainUndefined turns text/template's "function not defined" into a
// message that says why, when the function is a refused one.
func explainUndefined(err error) error {
	m := undefinedFunc.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	if why := RefusedFunction(m[1]); why != "" {
		return fmt.Errorf("%w: podlease does not support consul-template's %s: %s", err, m[1], why)
	}
	return fmt.Errorf("%w: it is not a consul-template function podlease knows", err)
}
