// Command pause is the sandbox image of the test bed's Kubernetes node (the
// part registry.k8s.io/pause plays elsewhere): it holds the pod's
// namespaces and sleeps until told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
