package agent

import (
	"bufio"
	"bytes"
	"strings"

	v1 "k8s.io/api/core/v1"
)

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// SetDefaultsPod applies the defaults the API server applies to a v1.Pod
// (k8s.io/kubernetes pkg/apis/core/v1/defaults.go), for the fields the agent
// and its status use. Written here because k8s.io/kubernetes is not a
// library module. Also defaults the namespace to "default", as the kubelet
// does for static pods.
func SetDefaultsPod(pod *v1.Pod) {
	defaultNamespace(&pod.Namespace)
	s := &pod.Spec
	if s.DNSPolicy == "" {
		s.DNSPolicy = v1.DNSClusterFirst
	}
	if s.RestartPolicy == "" {
		s.RestartPolicy = v1.RestartPolicyAlways
	}
	if s.TerminationGracePeriodSeconds == nil {
		g := int64(v1.DefaultTerminationGracePeriodSeconds)
		s.TerminationGracePeriodSeconds = &g
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &v1.PodSecurityContext{}
	}
	if s.SchedulerName == "" {
		s.SchedulerName = v1.DefaultSchedulerName
	}
	if s.EnableServiceLinks == nil {
		t := true
		s.EnableServiceLinks = &t
	}
	if s.HostNetwork {
		defaultHostNetworkPorts(s.InitContainers)
		defaultHostNetworkPorts(s.Containers)
	}
	for i := range s.InitContainers {
		defaultContainer(&s.InitContainers[i])
	}
	for i := range s.Containers {
		defaultContainer(&s.Containers[i])
	}
	for i := range s.Volumes {
		defaultVolume(&s.Volumes[i])
	}
}

func defaultHostNetworkPorts(cs []v1.Container) {
	for i := range cs {
		for j := range cs[i].Ports {
			if cs[i].Ports[j].HostPort == 0 {
				cs[i].Ports[j].HostPort = cs[i].Ports[j].ContainerPort
			}
		}
	}
}

func defaultContainer(c *v1.Container) {
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = v1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = v1.TerminationMessageReadFile
	}
	if c.ImagePullPolicy == "" {
		if imageTagIsLatest(c.Image) {
			c.ImagePullPolicy = v1.PullAlways
		} else {
			c.ImagePullPolicy = v1.PullIfNotPresent
		}
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = v1.ProtocolTCP
		}
	}
	// Requests default to limits (SetDefaults_Pod).
	if len(c.Resources.Limits) > 0 {
		if c.Resources.Requests == nil {
			c.Resources.Requests = v1.ResourceList{}
		}
		for k, v := range c.Resources.Limits {
			if _, ok := c.Resources.Requests[k]; !ok {
				c.Resources.Requests[k] = v.DeepCopy()
			}
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil && vf.FieldRef != nil && vf.FieldRef.APIVersion == "" {
			vf.FieldRef.APIVersion = "v1"
		}
	}
	defaultProbe(c.LivenessProbe)
	defaultProbe(c.ReadinessProbe)
	defaultProbe(c.StartupProbe)
	if c.Lifecycle != nil {
		defaultHandler(c.Lifecycle.PostStart)
		defaultHandler(c.Lifecycle.PreStop)
	}
}

func defaultProbe(p *v1.Probe) {
	if p == nil {
		return
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = 1
	}
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = 10
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = 1
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = 3
	}
	if p.HTTPGet != nil {
		defaultHTTPGet(p.HTTPGet)
	}
	if p.GRPC != nil && p.GRPC.Service == nil {
		empty := ""
		p.GRPC.Service = &empty
	}
}

func defaultHandler(h *v1.LifecycleHandler) {
	if h != nil && h.HTTPGet != nil {
		defaultHTTPGet(h.HTTPGet)
	}
}

func defaultHTTPGet(g *v1.HTTPGetAction) {
	if g.Path == "" {
		g.Path = "/"
	}
	if g.Scheme == "" {
		g.Scheme = v1.URISchemeHTTP
	}
}

func defaultVolume(v *v1.Volume) {
	vs := &v.VolumeSource
	if *vs == (v1.VolumeSource{}) {
		vs.EmptyDir = &v1.EmptyDirVolumeSource{}
	}
	mode := int32(v1.SecretVolumeSourceDefaultMode)
	if vs.Secret != nil && vs.Secret.DefaultMode == nil {
		m := mode
		vs.Secret.DefaultMode = &m
	}
	if vs.ConfigMap != nil && vs.ConfigMap.DefaultMode == nil {
		m := mode
		vs.ConfigMap.DefaultMode = &m
	}
	if vs.DownwardAPI != nil && vs.DownwardAPI.DefaultMode == nil {
		m := mode
		vs.DownwardAPI.DefaultMode = &m
	}
	if vs.Projected != nil && vs.Projected.DefaultMode == nil {
		m := mode
		vs.Projected.DefaultMode = &m
	}
	if vs.HostPath != nil && vs.HostPath.Type == nil {
		t := v1.HostPathUnset
		vs.HostPath.Type = &t
	}
}

// imageTagIsLatest tells whether an image reference has the tag "latest" or
// no tag and no digest (which means latest).
func imageTagIsLatest(image string) bool {
	if strings.Contains(image, "@") {
		return false
	}
	name := image
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	i := strings.LastIndex(name, ":")
	return i < 0 || name[i+1:] == "latest"
}

// isSidecar tells a restartable init container (restartPolicy: Always).
func isSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}
