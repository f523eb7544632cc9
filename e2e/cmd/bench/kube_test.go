package main

import "testing"

func TestSplice(t *testing.T) {
	const (
		oldLocal = "# bench\n\n## 1. old local\n"
		oldKube  = kubeHeading + "\n\nold kube\n"
		newLocal = "# bench\n\n## 1. new local\n"
		newKube  = kubeHeading + "\n\nnew kube\n"
	)
	for _, c := range []struct {
		name, old, local, kube, want string
	}{
		{"both measured", oldLocal + "\n" + oldKube, newLocal, newKube, newLocal + "\n" + newKube},
		{"kube only keeps the local part", oldLocal + "\n" + oldKube, "", newKube, oldLocal + "\n" + newKube},
		{"local only keeps the kube part", oldLocal + "\n" + oldKube, newLocal, "", newLocal + "\n" + oldKube},
		{"kube only, no kube part yet", oldLocal, "", newKube, oldLocal + "\n" + newKube},
		{"local only, no kube part yet", oldLocal, newLocal, "", newLocal},
		{"no file yet", "", "", newKube, newKube},
	} {
		if got := splice(c.old, c.local, c.kube); got != c.want {
			t.Errorf("%s:\ngot  %q\nwant %q", c.name, got, c.want)
		}
	}
}
