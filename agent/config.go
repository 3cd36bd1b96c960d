package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/agent/podcgroups"
)

// Pod spec → CRI configs, following the kubelet's kuberuntime
// (kuberuntime_sandbox.go, kuberuntime_container_linux.go).

// CRI labels and annotations; the io.kubernetes.* ones are the kubelet's.
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
	// labelManagedBy marks the sandboxes and containers the agent owns, so
	// it never touches pods a kubelet or crictl made through the same runtime.
	labelManagedBy = "peapod.io/managed-by"
	managedByAgent = "peapod-agent"

	annotationContainerHash          = "io.kubernetes.container.hash"
	annotationRestartCount           = "io.kubernetes.container.restartCount"
	annotationTerminationMsgPath     = "io.kubernetes.container.terminationMessagePath"
	annotationTerminationMsgPolicy   = "io.kubernetes.container.terminationMessagePolicy"
	annotationPreStopHandler         = "io.kubernetes.container.preStopHandler"
	annotationContainerPorts         = "io.kubernetes.container.ports"
	annotationPodTerminationGrace    = "io.kubernetes.pod.terminationGracePeriod"
	annotationTerminationMsgHostPath = "peapod.io/termination-message-host-path"
)

// Linux resource constants (kubelet cm/helpers_linux.go).
const (
	minShares     = 2
	maxShares     = 262144
	sharesPerCPU  = 1024
	milliCPUToCPU = 1000
	quotaPeriod   = 100000 // 100ms in µs
	minQuota      = 1000

	guaranteedOOMScoreAdj = -997
	bestEffortOOMScoreAdj = 1000
)

var (
	defaultMaskedPaths = []string{"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// podLogDir is /var/log/pods/<ns>_<name>_<uid> under root.
func podLogDir(root string, pod *v1.Pod) string {
	return filepath.Join(root, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
}

func podLabels(pod *v1.Pod) map[string]string {
	l := map[string]string{}
	for k, v := range pod.Labels {
		l[k] = v
	}
	l[labelPodName] = pod.Name
	l[labelPodNamespace] = pod.Namespace
	l[labelPodUID] = string(pod.UID)
	l[labelManagedBy] = managedByAgent
	return l
}

// makeSandboxConfig is the PodSandboxConfig of pod; userns is its user
// namespace (podUserNamespace; nil: the host's).
func makeSandboxConfig(pod *v1.Pod, attempt uint32, logsRoot string, dnsSet dnsSettings, userns *runtimeapi.UserNamespace) (*runtimeapi.PodSandboxConfig, error) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{
			Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: attempt,
		},
		Labels:       podLabels(pod),
		Annotations:  map[string]string{},
		LogDirectory: podLogDir(logsRoot, pod),
	}
	for k, v := range pod.Annotations {
		cfg.Annotations[k] = v
	}
	if !pod.Spec.HostNetwork {
		cfg.Hostname = podHostname(pod)
	}
	dns, err := makeDNSConfig(pod, dnsSet)
	if err != nil {
		return nil, err
	}
	cfg.DnsConfig = dns
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			cfg.PortMappings = append(cfg.PortMappings, &runtimeapi.PortMapping{
				Protocol:      toCRIProtocol(p.Protocol),
				ContainerPort: p.ContainerPort,
				HostPort:      p.HostPort,
				HostIp:        p.HostIP,
			})
		}
	}
	psc := pod.Spec.SecurityContext
	sc := &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: namespaceOptions(pod, userns)}
	for _, c := range allContainers(pod) {
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			sc.Privileged = true
		}
	}
	sysctls := map[string]string{}
	if psc != nil {
		if psc.RunAsUser != nil {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: *psc.RunAsUser}
		}
		if psc.RunAsGroup != nil {
			sc.RunAsGroup = &runtimeapi.Int64Value{Value: *psc.RunAsGroup}
		}
		sc.SupplementalGroups = supplementalGroups(psc)
		sc.Seccomp = seccompProfile(psc.SeccompProfile, nil)
		for _, s := range psc.Sysctls {
			sysctls[s.Name] = s.Value
		}
	}
	cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: sc, Sysctls: sysctls}
	return cfg, nil
}

func allContainers(pod *v1.Pod) []*v1.Container {
	var out []*v1.Container
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

func toCRIProtocol(p v1.Protocol) runtimeapi.Protocol {
	switch p {
	case v1.ProtocolUDP:
		return runtimeapi.Protocol_UDP
	case v1.ProtocolSCTP:
		return runtimeapi.Protocol_SCTP
	}
	return runtimeapi.Protocol_TCP
}

// podHostname is spec.hostnameOverride, else spec.hostname or the pod
// name, cut to 63 characters without a trailing '-' or '.' (the kubelet's
// GeneratePodHostNameAndDomain).
func podHostname(pod *v1.Pod) string {
	if o := pod.Spec.HostnameOverride; o != nil && *o != "" {
		return truncateHostname(*o)
	}
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	return truncateHostname(h)
}

func truncateHostname(h string) string {
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// namespaceOptions are the pod's namespaces, as the kubelet's
// NamespacesForPod: userns is the pod's user namespace (POD with its
// mappings for `hostUsers: false`), nil for the host's (mode NODE, which
// the kubelet sends explicitly too).
func namespaceOptions(pod *v1.Pod, userns *runtimeapi.UserNamespace) *runtimeapi.NamespaceOption {
	if userns == nil {
		userns = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
	}
	o := &runtimeapi.NamespaceOption{
		Network:       runtimeapi.NamespaceMode_POD,
		Pid:           runtimeapi.NamespaceMode_CONTAINER,
		Ipc:           runtimeapi.NamespaceMode_POD,
		UsernsOptions: userns,
	}
	if pod.Spec.HostNetwork {
		o.Network = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostIPC {
		o.Ipc = runtimeapi.NamespaceMode_NODE
	}
	switch {
	case pod.Spec.HostPID:
		o.Pid = runtimeapi.NamespaceMode_NODE
	case pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace:
		o.Pid = runtimeapi.NamespaceMode_POD
	}
	return o
}

func supplementalGroups(psc *v1.PodSecurityContext) []int64 {
	if psc == nil {
		return nil
	}
	g := slices.Clone(psc.SupplementalGroups)
	if psc.FSGroup != nil && !slices.Contains(g, *psc.FSGroup) {
		g = append(g, *psc.FSGroup)
	}
	return g
}

// dnsSettings are the node's DNS facts a pod's resolv.conf derives from.
type dnsSettings struct {
	ResolvConf string // the node's, for Default and as the base of a pod dnsConfig
	// ClusterDNS and ClusterDomain: agent.cluster_dns / cluster_domain.
	ClusterDNS    []string
	ClusterDomain string
}

// makeDNSConfig follows the kubelet's dns.Configurer: ClusterFirst (and
// ClusterFirstWithHostNet on the host network) use the cluster DNS servers
// with the <ns>.svc.<domain>, svc.<domain>, <domain> searches before the
// node's and ndots:5; without cluster DNS, or ClusterFirst on the host
// network, they fall back to Default. Default with no pod dnsConfig is nil
// (the runtime copies the node's resolv.conf); a pod dnsConfig is merged
// into the result; None takes the pod dnsConfig alone.
func makeDNSConfig(pod *v1.Pod, set dnsSettings) (*runtimeapi.DNSConfig, error) {
	pc := pod.Spec.DNSConfig
	policy := pod.Spec.DNSPolicy
	hostNet := pod.Spec.HostNetwork
	clusterFirst := len(set.ClusterDNS) > 0 && set.ClusterDomain != "" &&
		((policy == v1.DNSClusterFirst && !hostNet) || policy == v1.DNSClusterFirstWithHostNet)
	if policy != v1.DNSNone && pc == nil && !clusterFirst {
		return nil, nil
	}
	cfg := &runtimeapi.DNSConfig{}
	var opts []string
	if policy != v1.DNSNone {
		servers, searches, o, err := parseResolvConf(set.ResolvConf)
		if err != nil {
			return nil, err
		}
		cfg.Servers, cfg.Searches, opts = servers, searches, o
		if clusterFirst {
			d := set.ClusterDomain
			cfg.Servers = append([]string(nil), set.ClusterDNS...)
			cfg.Searches = append([]string{pod.Namespace + ".svc." + d, "svc." + d, d}, searches...)
			opts = []string{"ndots:5"}
		}
	}
	if pc != nil {
		cfg.Servers = dedupe(append(cfg.Servers, pc.Nameservers...))
		cfg.Searches = dedupe(append(cfg.Searches, pc.Searches...))
		for _, o := range pc.Options {
			opt := o.Name
			if o.Value != nil && *o.Value != "" {
				opt += ":" + *o.Value
			}
			opts = mergeDNSOption(opts, opt)
		}
	}
	if len(cfg.Servers) > 3 {
		cfg.Servers = cfg.Servers[:3]
	}
	if len(cfg.Searches) > 32 {
		cfg.Searches = cfg.Searches[:32]
	}
	cfg.Options = opts
	return cfg, nil
}

func mergeDNSOption(opts []string, opt string) []string {
	name, _, _ := strings.Cut(opt, ":")
	for i, o := range opts {
		if n, _, _ := strings.Cut(o, ":"); n == name {
			opts[i] = opt
			return opts
		}
	}
	return append(opts, opt)
}

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// parseResolvConf reads nameserver, search and options lines; a missing
// file is empty.
func parseResolvConf(path string) (servers, searches, options []string, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if len(fields) > 1 {
				servers = append(servers, fields[1])
			}
		case "search", "domain":
			searches = fields[1:]
		case "options":
			for _, o := range fields[1:] {
				options = mergeDNSOption(options, o)
			}
		}
	}
	return servers, searches, options, sc.Err()
}

// containerParams is what makeContainerConfig needs besides the spec.
type containerParams struct {
	Attempt  uint32
	ImageRef string
	// ImageUID / ImageUser are the image's configured user (ImageStatus).
	ImageUID  *int64
	ImageUser string
	Env       envContext
	Mounts    []*runtimeapi.Mount
	// TerminationMessageHostPath is the host file mounted at the
	// container's terminationMessagePath ("" for none).
	TerminationMessageHostPath string
	// NodeMemory is the node's memory capacity in bytes (OOM score).
	NodeMemory int64
	// TargetID is the container whose PID namespace an ephemeral
	// container joins (targetContainerName), "" for none.
	TargetID string
	// UserNS is the pod's user namespace (the sandbox's), nil: the host's.
	UserNS *runtimeapi.UserNamespace
}

// errConfig marks a CreateContainerConfigError.
type errConfig struct{ error }

// makeContainerConfig is the ContainerConfig of container c of pod.
func makeContainerConfig(pod *v1.Pod, c *v1.Container, p containerParams) (*runtimeapi.ContainerConfig, error) {
	if err := verifyRunAsNonRoot(pod, c, p.ImageUID, p.ImageUser); err != nil {
		return nil, errConfig{err}
	}
	env, err := makeEnvironment(pod, c, p.Env)
	if err != nil {
		return nil, errConfig{err}
	}
	command, args := expandCommand(c, env)
	labels := map[string]string{
		labelPodName:       pod.Name,
		labelPodNamespace:  pod.Namespace,
		labelPodUID:        string(pod.UID),
		labelContainerName: c.Name,
		labelManagedBy:     managedByAgent,
	}
	ann := map[string]string{
		annotationContainerHash:        containerHash(c),
		annotationRestartCount:         strconv.FormatUint(uint64(p.Attempt), 10),
		annotationTerminationMsgPath:   c.TerminationMessagePath,
		annotationTerminationMsgPolicy: string(c.TerminationMessagePolicy),
		annotationPodTerminationGrace:  strconv.FormatInt(gracePeriod(pod), 10),
	}
	if p.TerminationMessageHostPath != "" {
		ann[annotationTerminationMsgHostPath] = p.TerminationMessageHostPath
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		b, _ := json.Marshal(c.Lifecycle.PreStop)
		ann[annotationPreStopHandler] = string(b)
	}
	if len(c.Ports) > 0 {
		b, _ := json.Marshal(c.Ports)
		ann[annotationContainerPorts] = string(b)
	}
	mounts := slices.Clone(p.Mounts)
	if p.TerminationMessageHostPath != "" && c.TerminationMessagePath != "" {
		mounts = append(mounts, &runtimeapi.Mount{ContainerPath: c.TerminationMessagePath, HostPath: p.TerminationMessageHostPath})
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: p.Attempt},
		Image:       &runtimeapi.ImageSpec{Image: p.ImageRef, UserSpecifiedImage: c.Image},
		Command:     command,
		Args:        args,
		WorkingDir:  c.WorkingDir,
		Envs:        env,
		Mounts:      mounts,
		Labels:      labels,
		Annotations: ann,
		LogPath:     filepath.Join(c.Name, fmt.Sprintf("%d.log", p.Attempt)),
		Stdin:       c.Stdin,
		StdinOnce:   c.StdinOnce,
		Tty:         c.TTY,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources:       containerResources(pod, c, p.NodeMemory),
			SecurityContext: containerSecurityContext(pod, c, p.UserNS),
		},
	}
	if p.TargetID != "" {
		ns := cfg.Linux.SecurityContext.NamespaceOptions
		ns.Pid, ns.TargetId = runtimeapi.NamespaceMode_TARGET, p.TargetID
	}
	return cfg, nil
}

func gracePeriod(pod *v1.Pod) int64 {
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return *g
	}
	return v1.DefaultTerminationGracePeriodSeconds
}

// effectiveSecurity merges the pod and container security contexts
// (container fields win), as the kubelet's DetermineEffectiveSecurityContext.
type effectiveSecurity struct {
	RunAsUser, RunAsGroup *int64
	RunAsNonRoot          *bool
	Seccomp               *v1.SeccompProfile
}

func effective(pod *v1.Pod, c *v1.Container) effectiveSecurity {
	var e effectiveSecurity
	if psc := pod.Spec.SecurityContext; psc != nil {
		e.RunAsUser, e.RunAsGroup, e.RunAsNonRoot, e.Seccomp = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot, psc.SeccompProfile
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			e.RunAsUser = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			e.RunAsGroup = sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			e.RunAsNonRoot = sc.RunAsNonRoot
		}
		if sc.SeccompProfile != nil {
			e.Seccomp = sc.SeccompProfile
		}
	}
	return e
}

// verifyRunAsNonRoot is the kubelet's check of runAsNonRoot against the
// effective user: the spec's runAsUser, else the image's.
func verifyRunAsNonRoot(pod *v1.Pod, c *v1.Container, imageUID *int64, imageUser string) error {
	e := effective(pod, c)
	if e.RunAsNonRoot == nil || !*e.RunAsNonRoot {
		return nil
	}
	if e.RunAsUser != nil {
		if *e.RunAsUser == 0 {
			return errors.New("container's runAsUser breaks non-root policy")
		}
		return nil
	}
	switch {
	case imageUID != nil && *imageUID == 0:
		return errors.New("container has runAsNonRoot and image will run as root")
	case imageUID == nil && imageUser != "":
		return fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root", imageUser)
	case imageUID == nil:
		// No user in the image means root.
		return errors.New("container has runAsNonRoot and image will run as root")
	}
	return nil
}

func containerSecurityContext(pod *v1.Pod, c *v1.Container, userns *runtimeapi.UserNamespace) *runtimeapi.LinuxContainerSecurityContext {
	e := effective(pod, c)
	out := &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions:   namespaceOptions(pod, userns),
		SupplementalGroups: supplementalGroups(pod.Spec.SecurityContext),
		Seccomp:            seccompProfile(e.Seccomp, nil),
	}
	if e.RunAsUser != nil {
		out.RunAsUser = &runtimeapi.Int64Value{Value: *e.RunAsUser}
	}
	if e.RunAsGroup != nil {
		out.RunAsGroup = &runtimeapi.Int64Value{Value: *e.RunAsGroup}
	}
	unmasked := false
	if sc := c.SecurityContext; sc != nil {
		out.Privileged = sc.Privileged != nil && *sc.Privileged
		out.ReadonlyRootfs = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
		if sc.AllowPrivilegeEscalation != nil {
			out.NoNewPrivs = !*sc.AllowPrivilegeEscalation
		}
		if sc.Capabilities != nil {
			out.Capabilities = &runtimeapi.Capability{}
			for _, cp := range sc.Capabilities.Add {
				out.Capabilities.AddCapabilities = append(out.Capabilities.AddCapabilities, string(cp))
			}
			for _, cp := range sc.Capabilities.Drop {
				out.Capabilities.DropCapabilities = append(out.Capabilities.DropCapabilities, string(cp))
			}
		}
		unmasked = sc.ProcMount != nil && *sc.ProcMount == v1.UnmaskedProcMount
	}
	if !out.Privileged && !unmasked {
		out.MaskedPaths = slices.Clone(defaultMaskedPaths)
		out.ReadonlyPaths = slices.Clone(defaultReadonlyPaths)
	}
	if out.Privileged {
		out.NoNewPrivs = false
	}
	return out
}

// seccompProfile maps a v1 seccomp profile; nil is Unconfined (the
// kubelet's default without SeccompDefault). Localhost profiles are
// relative to /var/lib/peapod/seccomp.
func seccompProfile(p *v1.SeccompProfile, _ any) *runtimeapi.SecurityProfile {
	if p == nil {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	}
	switch p.Type {
	case v1.SeccompProfileTypeRuntimeDefault:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	case v1.SeccompProfileTypeLocalhost:
		ref := ""
		if p.LocalhostProfile != nil {
			ref = *p.LocalhostProfile
		}
		if !filepath.IsAbs(ref) {
			ref = filepath.Join("/var/lib/peapod/seccomp", ref)
		}
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
}

// containerResources computes LinuxContainerResources as the kubelet:
// shares from the CPU request (the limit when there is no request), CFS
// quota from the CPU limit over a 100ms period, the memory limit, and the
// OOM score adjustment of the pod's QoS class.
func containerResources(pod *v1.Pod, c *v1.Container, nodeMemory int64) *runtimeapi.LinuxContainerResources {
	cpuReq := c.Resources.Requests[v1.ResourceCPU]
	cpuLim := c.Resources.Limits[v1.ResourceCPU]
	memLim := c.Resources.Limits[v1.ResourceMemory]
	r := &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: memLim.Value()}
	if cpuReq.IsZero() && !cpuLim.IsZero() {
		r.CpuShares = milliCPUToShares(cpuLim.MilliValue())
	} else {
		r.CpuShares = milliCPUToShares(cpuReq.MilliValue())
	}
	if !cpuLim.IsZero() {
		r.CpuPeriod = quotaPeriod
		r.CpuQuota = milliCPUToQuota(cpuLim.MilliValue(), quotaPeriod)
	}
	r.OomScoreAdj = oomScoreAdj(pod, c, nodeMemory)
	return r
}

func milliCPUToShares(milli int64) int64 {
	if milli == 0 {
		return minShares
	}
	s := milli * sharesPerCPU / milliCPUToCPU
	return min(max(s, minShares), maxShares)
}

func milliCPUToQuota(milli, period int64) int64 {
	if milli == 0 {
		return 0
	}
	return max(milli*period/milliCPUToCPU, minQuota)
}

// oomScoreAdj is the kubelet's GetContainerOOMScoreAdjust (static pods are
// not treated as node-critical here: the runtime clamps the score anyway).
func oomScoreAdj(pod *v1.Pod, c *v1.Container, nodeMemory int64) int64 {
	switch podcgroups.QOSClass(pod) {
	case v1.PodQOSGuaranteed:
		return guaranteedOOMScoreAdj
	case v1.PodQOSBestEffort:
		return bestEffortOOMScoreAdj
	}
	if nodeMemory <= 0 {
		return bestEffortOOMScoreAdj - 1
	}
	memReq := c.Resources.Requests[v1.ResourceMemory]
	adj := 1000 - (1000*memReq.Value())/nodeMemory
	if adj < 1000+guaranteedOOMScoreAdj {
		return 1000 + guaranteedOOMScoreAdj
	}
	if adj == bestEffortOOMScoreAdj {
		return adj - 1
	}
	return adj
}
