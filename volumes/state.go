package volumes

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"

	"peapod/internal/atomicfile"
)

// Records in StateDir, each written atomically (temp file + rename):
//
//	pods/<uid>.json     the pod and its resolved volumes; removed when the
//	                    pod's teardown has finished
//	devices/<key>.json  a device attachment (driver, options, device path);
//	                    removed after detach
//
// The kernel stays the truth for what is mounted and which loop device
// holds which image; the records say what was meant and what a driver
// answered, which the kernel cannot tell.

type podRecord struct {
	Pod         *v1.Pod       `json:"pod"`
	Volumes     []*volumeSpec `json:"volumes"`
	Terminating bool          `json:"terminating,omitempty"`
}

type deviceRecord struct {
	Key        string              `json:"key"`
	Kind       string              `json:"kind"` // flexVolume | local
	Driver     string              `json:"driver,omitempty"`
	Options    map[string]string   `json:"options,omitempty"`
	SecretRef  *v1.SecretReference `json:"secretRef,omitempty"`
	FSType     string              `json:"fsType,omitempty"`
	ReadOnly   bool                `json:"readOnly,omitempty"`
	LocalPath  string              `json:"localPath,omitempty"`
	GlobalPath string              `json:"globalPath"`
	Attached   bool                `json:"attached"`
	DevicePath string              `json:"devicePath,omitempty"`
}

func writeJSONAtomic(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

func fileKey(key string) string {
	r := strings.NewReplacer("/", "~", ":", "_")
	return r.Replace(key)
}

func (m *Manager) podRecordPath(uid string) string {
	return filepath.Join(m.opts.StateDir, "pods", uid+".json")
}

func (m *Manager) deviceRecordPath(key string) string {
	return filepath.Join(m.opts.StateDir, "devices", fileKey(key)+".json")
}

func (m *Manager) savePod(pe *podEntry) error {
	return writeJSONAtomic(m.podRecordPath(string(pe.pod.UID)), podRecord{Pod: pe.pod, Volumes: pe.volumes, Terminating: pe.terminating})
}

func (m *Manager) saveDevice(d *deviceState) error {
	if !d.Attached {
		err := os.Remove(m.deviceRecordPath(d.Key))
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	return writeJSONAtomic(m.deviceRecordPath(d.Key), d.deviceRecord)
}

func loadJSONDir[T any](dir string) ([]T, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []T
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
