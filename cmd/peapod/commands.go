package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"peapod/config"
	"peapod/cri"
	"peapod/internal/atomicfile"
	"peapod/internal/hostcheck"
	"peapod/sandbox/infra"
	"peapod/sandbox/network"
	"peapod/sandbox/spec"
)

func runVersion(args []string) error {
	fmt.Printf("peapod %s (CRI %s)\n", cri.Version, "v1")
	return nil
}

func runConfig(args []string) error {
	if len(args) != 1 || args[0] != "default" {
		return fmt.Errorf("usage: peapod config default")
	}
	out, err := config.Render(config.Default())
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

// loadConfigFlag parses --config for client subcommands.
func loadConfigFlag(name string, args []string) (*config.Config, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", "", "config file (default /etc/peapod/peapod.toml when it exists)")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return nil, nil, err
	}
	return cfg, fs.Args(), nil
}

// adminClient talks HTTP to the daemon's root-only admin socket.
func adminClient(cfg *config.Config) *http.Client {
	sock := adminSocket(cfg)
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

func adminSocket(cfg *config.Config) string { return filepath.Join(cfg.State, "admin.sock") }

// runPods prints the agent's pods as a table, from GET /pods of the
// running daemon (which asks peapod-agent; the agent renders the table, so
// this binary links no Kubernetes API types).
func runPods(args []string) error {
	cfg, _, err := loadConfigFlag("pods", args)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + cfg.HTTP.Address + "/pods?format=table")
	if err != nil {
		return fmt.Errorf("is peapod serve running (http.address %s)? %w", cfg.HTTP.Address, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("GET /pods: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /pods: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	_, err = os.Stdout.Write(body)
	return err
}

func runImages(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("usage: peapod images import|export ...")
	}
	sub := args[0]
	cfg, rest, err := loadConfigFlag("images "+sub, args[1:])
	if err != nil {
		return err
	}
	client := adminClient(cfg)
	switch sub {
	case "import":
		if len(rest) != 1 {
			return fmt.Errorf("usage: peapod images import [--config FILE] FILE")
		}
		f, err := os.Open(rest[0])
		if err != nil {
			return err
		}
		defer f.Close()
		resp, err := client.Post("http://peapod/images/import", "application/x-tar", f)
		if err != nil {
			return fmt.Errorf("import: is peapod serve running (admin socket %s)? %w", adminSocket(cfg), err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("import %s: %s", rest[0], strings.TrimSpace(string(body)))
		}
		os.Stdout.Write(body)
		return nil
	case "export":
		if len(rest) < 2 {
			return fmt.Errorf("usage: peapod images export [--config FILE] FILE REF...")
		}
		q := url.Values{"ref": rest[1:]}
		resp, err := client.Get("http://peapod/images/export?" + q.Encode())
		if err != nil {
			return fmt.Errorf("export: is peapod serve running (admin socket %s)? %w", adminSocket(cfg), err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("export: %s", strings.TrimSpace(string(body)))
		}
		if err := atomicfile.WriteFrom(rest[0], resp.Body, 0o644); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("unknown images subcommand %q (import, export)", sub)
	}
}

// runCheck reports what peapod needs on this host, one line each.
func runCheck(args []string) error {
	cfg, _, err := loadConfigFlag("check", args)
	if err != nil {
		return err
	}
	var failed []string
	report := func(what string, err error) {
		if err != nil {
			fmt.Printf("FAIL  %-28s %v\n", what, err)
			failed = append(failed, what)
			return
		}
		fmt.Printf("ok    %s\n", what)
	}
	note := func(kind, what string) { fmt.Printf("%-5s %s\n", kind, what) }
	asRoot := os.Geteuid() == 0
	if !asRoot {
		report("root", errors.New("peapod serve must run as root"))
	}
	// The checks serve runs at start (RuntimeReady false on any failure).
	// Their outcome is the lines below: the daemon's log lines of the
	// runtime probe would only repeat them, interleaved.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	ctx := context.Background()
	for _, r := range hostcheck.Host(ctx, hostcheck.Options{Root: cfg.Root, SkipOverlay: !asRoot}) {
		report(r.What, r.Err)
	}
	if !asRoot {
		note("skip", "overlayfs upper dirs in "+cfg.Root+" (the test mounts an overlay: run as root)")
	}
	scratch, err := os.MkdirTemp("", "peapod-check-runtimes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	for _, name := range slices.Sorted(maps.Keys(cfg.Runtimes)) {
		r := hostcheck.Runtime(ctx, name, cfg.Runtimes[name].Path, scratch, asRoot)
		if r.Err != nil && r.Reason == hostcheck.ReasonRuntimeCannotRun && name != cfg.CRI.DefaultRuntime {
			// As in serve: only the default handler gates RuntimeReady;
			// pods asking for this one fail with this message.
			note("warn", fmt.Sprintf("%s: %v (pods whose RuntimeClass handler is %s fail)", r.What, r.Err, name))
			continue
		}
		report(r.What, r.Err)
	}
	// The plugins of the config in use; with none yet, those of the
	// default config peapod writes, or (default_conf = false) the missing
	// config itself, which the cluster's network plugin installs.
	plugins := []string{"bridge", "host-local", "portmap", "loopback"}
	if file, types, err := network.FirstConf(cfg.CNI.ConfDir); err == nil {
		report("CNI config "+file, nil)
		plugins = types
		if !slices.Contains(plugins, "loopback") {
			plugins = append(plugins, "loopback") // every pod's lo
		}
	} else if !cfg.CNI.DefaultConf {
		report("CNI config", fmt.Errorf("%v: pods cannot start until the network plugin installs one (cni.default_conf = false)", err))
		plugins = []string{"loopback"}
	}
	for _, plugin := range plugins {
		var found error = fmt.Errorf("not in %s", strings.Join(cfg.CNI.BinDirs, ", "))
		for _, d := range cfg.CNI.BinDirs {
			if _, err := os.Stat(filepath.Join(d, plugin)); err == nil {
				found = nil
				break
			}
		}
		report("CNI plugin "+plugin, found)
	}
	if os.Geteuid() == 0 {
		report("pause (new namespaces, confined)", checkPause())
		missing, err := hostcheck.MissingCapabilities("/proc/self/status")
		if err != nil {
			note("warn", "capabilities: "+err.Error())
		}
		for _, m := range missing {
			note("warn", m)
		}
	}
	checkLXCFS(cfg, report, note)
	if len(failed) > 0 {
		return fmt.Errorf("%d checks failed", len(failed))
	}
	return nil
}

// checkPause starts the pause as a pod would get it (new UTS, IPC and PID
// namespaces, chrooted, unprivileged) and stops it.
func checkPause() error {
	path, args, err := findPause()
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "peapod-check-pause-")
	if err != nil {
		return err
	}
	defer os.Remove(root)
	if err := os.Chmod(root, 0o555); err != nil {
		return err
	}
	p, err := infra.Start(infra.Options{
		Path: path, Args: args, Root: root,
		NewUTS: true, Hostname: "peapod-check", NewIPC: true, NewPID: true,
		UID: spec.PauseUser, GID: spec.PauseUser,
	})
	if err != nil {
		return err
	}
	return p.Stop(5 * time.Second)
}
