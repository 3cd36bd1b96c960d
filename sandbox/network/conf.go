package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"k8s.io/klog/v2"
)

// confExts are the file name extensions libcni, CRI-O and containerd read.
var confExts = []string{".conf", ".conflist", ".json"}

// DefaultConfList renders the conflist New writes for o (defaults filled
// in) into an empty conf dir.
func DefaultConfList(o Options) ([]byte, error) { return defaultConfList(o.withDefaults()) }

// defaultConfList renders peapod's default network: a bridge that is the
// pods' gateway, host-local IPAM, and portmap for hostPorts. ipMasq is off:
// pods get no NAT route off the box. lo is brought up by Setup itself
// (an in-process netlink call instead of exec'ing the loopback plugin).
func defaultConfList(o Options) ([]byte, error) {
	ipam := map[string]any{
		"type":   "host-local",
		"ranges": [][]map[string]string{{{"subnet": o.Subnet}}},
		"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
	}
	if o.IPAMDataDir != "" {
		ipam["dataDir"] = o.IPAMDataDir
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       o.NetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      o.Bridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam":        ipam,
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
			},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// confFiles lists the network config files in dir, sorted by name.
func confFiles(dir string) ([]string, error) {
	files, err := libcni.ConfFiles(dir, confExts)
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	return files, nil
}

// writeDefaultConfIfEmpty writes the default conflist when o.ConfDir holds
// no config. The file appears whole or not at all (temp file, fsync, rename).
func writeDefaultConfIfEmpty(o Options) error {
	files, err := confFiles(o.ConfDir)
	if err != nil {
		return fmt.Errorf("reading CNI conf dir: %w", err)
	}
	if len(files) > 0 {
		return nil
	}
	data, err := defaultConfList(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.ConfDir, 0o755); err != nil {
		return fmt.Errorf("CNI conf dir: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(o.ConfDir, DefaultConfFile), data, 0o644); err != nil {
		return fmt.Errorf("writing the default CNI config: %w", err)
	}
	klog.InfoS("wrote the default CNI config", "file", filepath.Join(o.ConfDir, DefaultConfFile), "bridge", o.Bridge, "subnet", o.Subnet)
	return nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	// The temp name does not end in a config extension, so a reader that
	// lists the dir meanwhile never sees a half-written config.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// stamp identifies one version of a file or dir cheaply.
type stamp struct {
	mtime time.Time
	size  int64
}

func stampOf(fi fs.FileInfo) stamp { return stamp{fi.ModTime(), fi.Size()} }

// confCache holds the network list last loaded from the conf dir. It stays
// valid while the dir's mtime (files added, removed, renamed) and the chosen
// file's mtime and size are unchanged.
type confCache struct {
	dir      stamp
	file     string
	fileSt   stamp
	list     *libcni.NetworkConfigList
	err      error
	loadedAt time.Time
}

// networkList returns the network to use: the first valid config in the conf
// dir by file name, re-read when the dir or that file changed.
func (m *Manager) networkList() (*libcni.NetworkConfigList, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dirFI, err := os.Stat(m.opts.ConfDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no CNI network config in %s", m.opts.ConfDir)
		}
		return nil, fmt.Errorf("CNI conf dir: %w", err)
	}
	c := &m.conf
	if !c.loadedAt.IsZero() && c.dir == stampOf(dirFI) && c.file != "" {
		if fi, err := os.Stat(c.file); err == nil && stampOf(fi) == c.fileSt {
			return c.list, c.err
		}
	}
	*c = confCache{dir: stampOf(dirFI), loadedAt: time.Now()}
	c.file, c.fileSt, c.list, c.err = loadFirstConf(m.opts.ConfDir)
	if c.err != nil {
		// An empty or invalid dir is re-read on every call: it is the
		// not-ready path, and a cached "" file would never be revalidated.
		c.loadedAt = time.Time{}
	}
	return c.list, c.err
}

func loadFirstConf(dir string) (string, stamp, *libcni.NetworkConfigList, error) {
	files, err := confFiles(dir)
	if err != nil {
		return "", stamp{}, nil, fmt.Errorf("reading CNI conf dir: %w", err)
	}
	if len(files) == 0 {
		return "", stamp{}, nil, fmt.Errorf("no CNI network config in %s", dir)
	}
	var skipped []string
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		list, err := loadConfFile(f)
		if err != nil {
			klog.InfoS("skipping invalid CNI config", "file", f, "err", err)
			skipped = append(skipped, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		return f, stampOf(fi), list, nil
	}
	return "", stamp{}, nil, fmt.Errorf("no valid CNI network config in %s (%s)", dir, strings.Join(skipped, "; "))
}

func loadConfFile(path string) (*libcni.NetworkConfigList, error) {
	if filepath.Ext(path) == ".conflist" {
		return libcni.NetworkConfFromFile(path)
	}
	// .conf / .json: a single plugin config, or a list under a .conf name
	// (some installers do that); libcni up-converts the former.
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var probe struct {
		Plugins json.RawMessage `json:"plugins"`
	}
	if json.Unmarshal(data, &probe) == nil && probe.Plugins != nil {
		return libcni.NetworkConfFromBytes(data)
	}
	conf, err := libcni.NetworkPluginConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	if conf.Network.Type == "" {
		return nil, fmt.Errorf("no plugin type")
	}
	return libcni.ConfListFromConf(conf)
}

// Ready reports whether pods can be networked: nil, or an error that names
// what is missing — the config, or a plugin binary. It re-reads the conf dir
// when it changed, so a config added later is picked up.
func (m *Manager) Ready() error {
	list, err := m.networkList()
	if err != nil {
		return err
	}
	for _, p := range list.Plugins {
		if _, err := m.exec.FindInPath(p.Network.Type, m.opts.BinDirs); err != nil {
			return fmt.Errorf("CNI plugin %q not found in %v", p.Network.Type, m.opts.BinDirs)
		}
		if ipam := p.Network.IPAM.Type; ipam != "" {
			if _, err := m.exec.FindInPath(ipam, m.opts.BinDirs); err != nil {
				return fmt.Errorf("CNI plugin %q not found in %v", ipam, m.opts.BinDirs)
			}
		}
	}
	return nil
}

// ConfFile returns the config file in use, or "" when none is valid.
func (m *Manager) ConfFile() string {
	if _, err := m.networkList(); err != nil {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conf.file
}
