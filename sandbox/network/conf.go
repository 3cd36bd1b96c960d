package network

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/libcni"
	"k8s.io/klog/v2"

	"peapod/internal/atomicfile"
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
	if err := atomicfile.WriteFile(filepath.Join(o.ConfDir, DefaultConfFile), data, 0o644); err != nil {
		return fmt.Errorf("writing the default CNI config: %w", err)
	}
	klog.InfoS("wrote the default CNI config", "file", filepath.Join(o.ConfDir, DefaultConfFile), "bridge", o.Bridge, "subnet", o.Subnet)
	return nil
}

// stamp identifies one version of a config file cheaply: a file replaced
// by rename gets a new inode, one rewritten in place a new mtime or size.
type stamp struct {
	name  string
	ino   uint64
	mtime int64 // ns
	size  int64
}

func stampOf(path string, fi fs.FileInfo) stamp {
	st := stamp{name: filepath.Base(path), mtime: fi.ModTime().UnixNano(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

// confCache holds the network list last loaded from the conf dir, with the
// stamps of every config file in it at that time. It stays valid while those
// stamps are unchanged: a file added, removed, renamed or rewritten (even an
// invalid one sorting first, which may have become valid) reloads it.
type confCache struct {
	stamps []stamp
	file   string
	list   *libcni.NetworkConfigList
}

// networkList returns the network to use: the first valid config in the conf
// dir by file name. The dir is listed and its config files stat'ed on every
// call (a few syscalls: Status and RunPodSandbox are its callers), so a
// config an operator installs, changes or removes is in use from the next
// call on, without a restart and without a watch to keep alive. This is
// what containerd's CRI plugin gets from its fsnotify conf syncer and CRI-O
// from ocicni's watcher, without their window between the event and the
// reload.
func (m *Manager) networkList() (*libcni.NetworkConfigList, error) {
	_, list, err := m.currentConf()
	return list, err
}

// currentConf is networkList with the file the list comes from.
func (m *Manager) currentConf() (string, *libcni.NetworkConfigList, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := m.opts.ConfDir
	files, err := confFiles(dir)
	if err != nil {
		return "", nil, fmt.Errorf("reading CNI conf dir: %w", err)
	}
	stamps := make([]stamp, 0, len(files))
	fis := make([]fs.FileInfo, len(files))
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			// Gone meanwhile, or a dangling link: part of the key as
			// "nothing", loadFirstConf reports it.
			stamps = append(stamps, stamp{name: filepath.Base(f)})
			continue
		}
		fis[i] = fi
		stamps = append(stamps, stampOf(f, fi))
	}
	c := &m.conf
	if c.list != nil && slices.Equal(c.stamps, stamps) {
		return c.file, c.list, nil
	}
	file, list, err := loadFirstConf(dir, files, fis)
	if err != nil {
		// Not cached: the not-ready path stays a re-read on every call.
		if c.list != nil {
			klog.InfoS("CNI config gone, network not ready", "confDir", dir, "err", err)
		}
		*c = confCache{}
		return "", nil, err
	}
	if c.file != file || c.list == nil || !slices.Equal(c.list.Bytes, list.Bytes) {
		klog.InfoS("Using CNI config", "file", file, "network", list.Name, "plugins", pluginTypes(list))
	}
	*c = confCache{stamps: stamps, file: file, list: list}
	return file, list, nil
}

func pluginTypes(list *libcni.NetworkConfigList) []string {
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	return types
}

// loadFirstConf loads the first valid config of files (sorted, with their
// FileInfo; nil where stat failed).
func loadFirstConf(dir string, files []string, fis []fs.FileInfo) (string, *libcni.NetworkConfigList, error) {
	if len(files) == 0 {
		return "", nil, fmt.Errorf("no CNI network config in %s", dir)
	}
	var skipped []string
	for i, f := range files {
		if fis[i] == nil {
			skipped = append(skipped, fmt.Sprintf("%s: cannot stat", filepath.Base(f)))
			continue
		}
		list, err := loadConfFile(f)
		if err != nil {
			klog.V(2).InfoS("Skipping invalid CNI config", "file", f, "err", err)
			skipped = append(skipped, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		return f, list, nil
	}
	return "", nil, fmt.Errorf("no valid CNI network config in %s (%s)", dir, strings.Join(skipped, "; "))
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
func (m *Manager) Ready() error { return m.ConfStatus().Err }

// ConfStatus is the CNI config as Status sees it (`crictl info`).
type ConfStatus struct {
	ConfDir string
	BinDirs []string
	File    string   // the config file in use; "" when none is valid
	Network string   // its network name
	Plugins []string // its plugins' types, in chain order
	Err     error    // nil: pods can be networked
}

// ConfStatus reports the config in use and whether pods can be networked
// with it (every plugin binary, IPAM included, found in BinDirs).
func (m *Manager) ConfStatus() ConfStatus {
	st := ConfStatus{ConfDir: m.opts.ConfDir, BinDirs: m.opts.BinDirs}
	file, list, err := m.currentConf()
	if err != nil {
		st.Err = err
		return st
	}
	st.File = file
	st.Network, st.Plugins = list.Name, pluginTypes(list)
	for _, p := range list.Plugins {
		for _, typ := range []string{p.Network.Type, p.Network.IPAM.Type} {
			if typ == "" {
				continue
			}
			if _, err := m.exec.FindInPath(typ, m.opts.BinDirs); err != nil {
				st.Err = fmt.Errorf("CNI plugin %q not found in %v (network %q of %s)", typ, m.opts.BinDirs, list.Name, st.File)
				return st
			}
		}
	}
	return st
}

// ConfFile returns the config file in use, or "" when none is valid.
func (m *Manager) ConfFile() string { return m.ConfStatus().File }

// FirstConf is the config peapod would use from dir right now, and the
// plugin types of its chain: for `peapod check`, without a Manager.
func FirstConf(dir string) (file string, plugins []string, err error) {
	files, err := confFiles(dir)
	if err != nil {
		return "", nil, fmt.Errorf("reading CNI conf dir: %w", err)
	}
	fis := make([]fs.FileInfo, len(files))
	for i, f := range files {
		fis[i], _ = os.Stat(f)
	}
	file, list, err := loadFirstConf(dir, files, fis)
	if err != nil {
		return "", nil, err
	}
	for _, p := range list.Plugins {
		plugins = append(plugins, p.Network.Type)
		if t := p.Network.IPAM.Type; t != "" {
			plugins = append(plugins, t) // host-local, called by the plugin
		}
	}
	return file, plugins, nil
}
