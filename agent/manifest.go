package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"peapod/agent/objects"
)

// Annotations the agent puts on static pods (the first three as the kubelet).
const (
	annotationConfigSource = "kubernetes.io/config.source"
	annotationConfigHash   = "kubernetes.io/config.hash"
	annotationManifest     = "peapod.io/manifest"
)

// ManifestError is a manifest document that could not be used. It never
// stops the other documents or files.
type ManifestError struct {
	File string // path of the manifest file
	Doc  int    // 0-based document index in the file
	// Namespace and Name of the object when they could be read.
	Namespace, Name string
	Err             error
}

func (e ManifestError) Error() string {
	what := fmt.Sprintf("%s (document %d)", e.File, e.Doc)
	if e.Name != "" {
		what += fmt.Sprintf(" %s/%s", e.Namespace, e.Name)
	}
	return what + ": " + e.Err.Error()
}

// manifestSet is everything read from the manifest directory in one pass.
type manifestSet struct {
	Pods     []*v1.Pod // defaulted, validated, UID set; sorted by file then doc
	Objects  *Objects
	Errors   []ManifestError
	Warnings []string
}

// readManifestDir parses every *.yaml, *.yml and *.json file of dir (hidden
// files and sub-directories are skipped). A missing dir is an empty set.
func readManifestDir(dir, nodeName string) *manifestSet {
	set := &manifestSet{Objects: objects.New()}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			set.Errors = append(set.Errors, ManifestError{File: dir, Err: err})
		}
		return set
	}
	for _, e := range entries {
		if !isManifestName(e.Name()) || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			set.Errors = append(set.Errors, ManifestError{File: path, Err: err})
			continue
		}
		parseManifest(set, path, data, nodeName)
	}
	// Two pods with the same namespace/name: the first file (by name) wins.
	seen := map[string]string{}
	pods := set.Pods[:0]
	for _, p := range set.Pods {
		k := objects.Key(p.Namespace, p.Name)
		if first, dup := seen[k]; dup {
			set.Errors = append(set.Errors, ManifestError{File: p.Annotations[annotationManifest], Namespace: p.Namespace, Name: p.Name,
				Err: fmt.Errorf("pod %s is already defined in %s", k, first)})
			continue
		}
		seen[k] = p.Annotations[annotationManifest]
		pods = append(pods, p)
	}
	set.Pods = pods
	return set
}

func isManifestName(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// parseManifest adds the documents of one file to set.
func parseManifest(set *manifestSet, path string, data []byte, nodeName string) {
	r := utilyaml.NewYAMLReader(bufioReader(data))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return
		}
		if err != nil {
			set.Errors = append(set.Errors, ManifestError{File: path, Doc: i, Err: err})
			return
		}
		parseDocument(set, path, i, doc, nodeName)
	}
}

type typeHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

func parseDocument(set *manifestSet, path string, idx int, doc []byte, nodeName string) {
	if len(bytes.TrimSpace(stripComments(doc))) == 0 {
		return
	}
	var h typeHeader
	if err := yaml.Unmarshal(doc, &h); err != nil {
		set.Errors = append(set.Errors, ManifestError{File: path, Doc: idx, Err: err})
		return
	}
	fail := func(err error) {
		ns := h.Metadata.Namespace
		if ns == "" {
			ns = v1.NamespaceDefault
		}
		set.Errors = append(set.Errors, ManifestError{File: path, Doc: idx, Namespace: ns, Name: h.Metadata.Name, Err: err})
	}
	if h.Kind == "" {
		fail(errors.New("no kind"))
		return
	}
	if h.Kind == "List" {
		for _, item := range h.Items {
			parseDocument(set, path, idx, item, nodeName)
		}
		return
	}
	if h.APIVersion != "v1" {
		set.Warnings = append(set.Warnings, fmt.Sprintf("%s (document %d): %s %s/%s ignored: only core v1 objects are read", path, idx, h.APIVersion, h.Kind, h.Metadata.Name))
		return
	}
	warn := func(obj any) error {
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			if err2 := yaml.Unmarshal(doc, obj); err2 != nil {
				return err2
			}
			set.Warnings = append(set.Warnings, fmt.Sprintf("%s (document %d): %s %s: %v", path, idx, h.Kind, h.Metadata.Name, err))
		}
		return nil
	}
	switch h.Kind {
	case "Pod":
		pod := &v1.Pod{}
		if err := warn(pod); err != nil {
			fail(err)
			return
		}
		SetDefaultsPod(pod)
		if err := validatePod(pod); err != nil {
			fail(err)
			return
		}
		setStaticPodIdentity(pod, path, nodeName)
		set.Pods = append(set.Pods, pod)
	case "ConfigMap":
		cm := &v1.ConfigMap{}
		if err := warn(cm); err != nil {
			fail(err)
			return
		}
		defaultNamespace(&cm.ObjectMeta.Namespace)
		if err := validateObjectName(cm.Name, cm.Namespace); err != nil {
			fail(err)
			return
		}
		set.Objects.ConfigMaps[objects.Key(cm.Namespace, cm.Name)] = cm
	case "Secret":
		s := &v1.Secret{}
		if err := warn(s); err != nil {
			fail(err)
			return
		}
		defaultNamespace(&s.ObjectMeta.Namespace)
		if err := validateObjectName(s.Name, s.Namespace); err != nil {
			fail(err)
			return
		}
		// As the API server: stringData is merged into data, then dropped.
		if len(s.StringData) > 0 && s.Data == nil {
			s.Data = map[string][]byte{}
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
		if s.Type == "" {
			s.Type = v1.SecretTypeOpaque
		}
		set.Objects.Secrets[objects.Key(s.Namespace, s.Name)] = s
	case "PersistentVolume":
		pv := &v1.PersistentVolume{}
		if err := warn(pv); err != nil {
			fail(err)
			return
		}
		if pv.Spec.PersistentVolumeReclaimPolicy == "" {
			pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimRetain
		}
		if pv.Spec.VolumeMode == nil {
			m := v1.PersistentVolumeFilesystem
			pv.Spec.VolumeMode = &m
		}
		if err := validateObjectName(pv.Name, "default"); err != nil {
			fail(err)
			return
		}
		set.Objects.PersistentVolumes = append(set.Objects.PersistentVolumes, pv)
	case "PersistentVolumeClaim":
		pvc := &v1.PersistentVolumeClaim{}
		if err := warn(pvc); err != nil {
			fail(err)
			return
		}
		defaultNamespace(&pvc.ObjectMeta.Namespace)
		if pvc.Spec.VolumeMode == nil {
			m := v1.PersistentVolumeFilesystem
			pvc.Spec.VolumeMode = &m
		}
		if err := validateObjectName(pvc.Name, pvc.Namespace); err != nil {
			fail(err)
			return
		}
		set.Objects.PersistentVolumeClaims[objects.Key(pvc.Namespace, pvc.Name)] = pvc
	default:
		set.Warnings = append(set.Warnings, fmt.Sprintf("%s (document %d): kind %s ignored: the agent reads Pod, ConfigMap, Secret, PersistentVolume and PersistentVolumeClaim", path, idx, h.Kind))
	}
}

// setStaticPodIdentity gives a static pod its UID, as the kubelet does: a
// hash of the defaulted pod, the node name and the source file. Same content
// → same UID across restarts; changed content → a new pod.
func setStaticPodIdentity(pod *v1.Pod, path, nodeName string) {
	h := sha256.New()
	b, _ := json.Marshal(pod) // v1.Pod always marshals; maps are sorted
	h.Write(b)
	fmt.Fprintf(h, "host:%s", nodeName)
	fmt.Fprintf(h, "file:%s", path)
	uid := hex.EncodeToString(h.Sum(nil))[:32]
	pod.UID = types.UID(uid)
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[annotationConfigSource] = "file"
	pod.Annotations[annotationConfigHash] = uid
	pod.Annotations[annotationManifest] = path
	if pod.Spec.NodeName == "" {
		pod.Spec.NodeName = nodeName
	}
}

func defaultNamespace(ns *string) {
	if *ns == "" {
		*ns = v1.NamespaceDefault
	}
}

func validateObjectName(name, namespace string) error {
	if name == "" {
		return errors.New("metadata.name is required")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("metadata.name %q: %s", name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("metadata.namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	return nil
}

// validatePod is a small subset of the API server's validation: what the
// agent relies on, plus the mistakes people make most.
func validatePod(pod *v1.Pod) error {
	var errs []string
	if err := validateObjectName(pod.Name, pod.Namespace); err != nil {
		return err
	}
	if len(pod.Spec.Containers) == 0 {
		errs = append(errs, "spec.containers: at least one container is required")
	}
	names := map[string]bool{}
	check := func(field string, c *v1.Container, init bool) {
		if c.Name == "" {
			errs = append(errs, field+".name: required")
		} else if e := validation.IsDNS1123Label(c.Name); len(e) > 0 {
			errs = append(errs, fmt.Sprintf("%s.name %q: %s", field, c.Name, strings.Join(e, "; ")))
		} else if names[c.Name] {
			errs = append(errs, fmt.Sprintf("%s.name %q: duplicate container name", field, c.Name))
		}
		names[c.Name] = true
		if c.Image == "" {
			errs = append(errs, field+".image: required")
		}
		switch c.ImagePullPolicy {
		case v1.PullAlways, v1.PullIfNotPresent, v1.PullNever:
		default:
			errs = append(errs, fmt.Sprintf("%s.imagePullPolicy %q: must be Always, IfNotPresent or Never", field, c.ImagePullPolicy))
		}
		if c.RestartPolicy != nil {
			if !init || *c.RestartPolicy != v1.ContainerRestartPolicyAlways {
				errs = append(errs, field+".restartPolicy: only initContainers may set it, and only to Always")
			}
		}
		if init && !isSidecar(c) && (c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil || c.Lifecycle != nil) {
			errs = append(errs, field+": probes and lifecycle are only allowed on restartable (restartPolicy: Always) init containers")
		}
		for j, p := range c.Ports {
			if p.ContainerPort < 1 || p.ContainerPort > 65535 {
				errs = append(errs, fmt.Sprintf("%s.ports[%d].containerPort %d: must be 1-65535", field, j, p.ContainerPort))
			}
			if p.HostPort < 0 || p.HostPort > 65535 {
				errs = append(errs, fmt.Sprintf("%s.ports[%d].hostPort %d: must be 0-65535", field, j, p.HostPort))
			}
		}
		for j, e := range c.Env {
			if e.Name == "" {
				errs = append(errs, fmt.Sprintf("%s.env[%d].name: required", field, j))
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		check(fmt.Sprintf("spec.initContainers[%d]", i), &pod.Spec.InitContainers[i], true)
	}
	for i := range pod.Spec.Containers {
		check(fmt.Sprintf("spec.containers[%d]", i), &pod.Spec.Containers[i], false)
	}
	switch pod.Spec.RestartPolicy {
	case v1.RestartPolicyAlways, v1.RestartPolicyOnFailure, v1.RestartPolicyNever:
	default:
		errs = append(errs, fmt.Sprintf("spec.restartPolicy %q: must be Always, OnFailure or Never", pod.Spec.RestartPolicy))
	}
	switch pod.Spec.DNSPolicy {
	case v1.DNSClusterFirst, v1.DNSClusterFirstWithHostNet, v1.DNSDefault:
	case v1.DNSNone:
		if pod.Spec.DNSConfig == nil {
			errs = append(errs, "spec.dnsConfig: required when dnsPolicy is None")
		}
	default:
		errs = append(errs, fmt.Sprintf("spec.dnsPolicy %q: unsupported", pod.Spec.DNSPolicy))
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		errs = append(errs, "spec.terminationGracePeriodSeconds: must be >= 0")
	}
	errs = append(errs, hostUsersErrors(&pod.Spec)...)
	if len(errs) > 0 {
		sort.Strings(errs)
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// stripComments drops YAML comment lines, to tell an empty document (only
// comments, e.g. a trailing "---") from a real one.
func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' || string(t) == "---" {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}
