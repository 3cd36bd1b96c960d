package probes

import criapi "k8s.io/cri-api/pkg/apis"

// The kubelet's CRI client interface satisfies Runtime.
var _ Runtime = criapi.RuntimeService(nil)
