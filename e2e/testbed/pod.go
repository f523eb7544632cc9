package testbed

import "slices"

// Pod is the part of a Kubernetes Pod object (as `kubectl get -o json` and
// the API print it) that the kube tests and the bench read.
type Pod struct {
	Metadata struct {
		Name              string  `json:"name"`
		UID               string  `json:"uid"`
		ResourceVersion   string  `json:"resourceVersion"`
		DeletionTimestamp *string `json:"deletionTimestamp"`
	} `json:"metadata"`
	Status struct {
		Phase      string `json:"phase"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		InitContainerStatuses []ContainerStatus `json:"initContainerStatuses"`
		ContainerStatuses     []ContainerStatus `json:"containerStatuses"`
	} `json:"status"`
}

// ContainerStatus is the part of a container's status the tests and the
// bench read.
type ContainerStatus struct {
	Name         string `json:"name"`
	ContainerID  string `json:"containerID"`
	RestartCount int    `json:"restartCount"`
	Ready        bool   `json:"ready"`
	State        struct {
		Waiting *struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"waiting"`
		Running    *struct{} `json:"running"`
		Terminated *struct {
			ExitCode int    `json:"exitCode"`
			Reason   string `json:"reason"`
		} `json:"terminated"`
	} `json:"state"`
}

// Ready reports whether the pod's Ready condition is True.
func (p Pod) Ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// Containers returns the statuses of the init containers (native sidecars
// among them), then of the app containers.
func (p Pod) Containers() []ContainerStatus {
	return append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...)
}

// Container returns the status of the container called name.
func (p Pod) Container(name string) (ContainerStatus, bool) {
	for _, c := range p.Containers() {
		if c.Name == name {
			return c, true
		}
	}
	return ContainerStatus{}, false
}
