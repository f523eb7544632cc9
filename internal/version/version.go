// Package version holds the build version, set at link time with
// -ldflags "-X github.com/podlease/podlease/internal/version.Version=...".
package version

// Version is the podlease release, or "dev" for an unstamped build.
var Version = "dev"
