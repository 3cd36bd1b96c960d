package spec

// OCI annotation keys, the same as containerd's CRI plugin writes, so tools
// that read them (e.g. NRI plugins, runc hooks, crictl inspect users) work.
const (
	AnnotationContainerType    = "io.kubernetes.cri.container-type"
	AnnotationSandboxID        = "io.kubernetes.cri.sandbox-id"
	AnnotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	AnnotationSandboxLogDir    = "io.kubernetes.cri.sandbox-log-directory"
	AnnotationContainerName    = "io.kubernetes.cri.container-name"
	AnnotationImageName        = "io.kubernetes.cri.image-name"
	AnnotationSandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
	AnnotationSandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	AnnotationSandboxCPUShares = "io.kubernetes.cri.sandbox-cpu-shares"
	AnnotationSandboxMemory    = "io.kubernetes.cri.sandbox-memory"
	ContainerTypeSandbox       = "sandbox"
	ContainerTypeContainer     = "container"
)

// annotations copies the CRI annotations and then sets the io.kubernetes.cri
// ones (which a CRI annotation cannot override).
func annotations(cri map[string]string, ours map[string]string) map[string]string {
	out := make(map[string]string, len(cri)+len(ours))
	for k, v := range cri {
		out[k] = v
	}
	for k, v := range ours {
		out[k] = v
	}
	return out
}
