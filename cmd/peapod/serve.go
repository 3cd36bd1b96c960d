package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/config"
	"peapod/cri"
	"peapod/cri/streaming"
	"peapod/image"
	"peapod/internal/hostcheck"
	"peapod/internal/unixsock"
	"peapod/metrics"
	"peapod/oci"
	"peapod/sandbox"
	"peapod/sandbox/network"
	"peapod/store"
)

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	klog.InitFlags(fs)
	path := fs.String("config", "", "config file (default /etc/peapod/peapod.toml when it exists)")
	root := fs.String("root", "", "override root (persistent state dir)")
	state := fs.String("state", "", "override state (runtime state dir)")
	socket := fs.String("socket", "", "override cri.socket")
	httpAddr := fs.String("http-address", "", "override http.address")
	cniConfDir := fs.String("cni-conf-dir", "", "override cni.conf_dir")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{{*root, &cfg.Root}, {*state, &cfg.State}, {*socket, &cfg.CRI.Socket}, {*httpAddr, &cfg.HTTP.Address}, {*cniConfDir, &cfg.CNI.ConfDir}} {
		if o.flag != "" {
			*o.dst = o.flag
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The agent child gets the same config file and overrides, and serve's
	// log verbosity.
	var agentProc *agentProcess
	if cfg.Agent.Enabled {
		v := ""
		if f := fs.Lookup("v"); f != nil {
			v = f.Value.String()
		}
		if agentProc, err = newAgentProcess(cfg, *path, v); err != nil {
			return err
		}
	}
	return serve(ctx, cfg, agentProc)
}

// daemon holds what serve wires together, for orderly shutdown.
type daemon struct {
	cfg    *config.Config
	store  *store.Store
	images *image.Service
	grpc   *grpc.Server
	http   *metrics.Server
	admin  *http.Server
}

func serve(ctx context.Context, cfg *config.Config, agentProc *agentProcess) error {
	if os.Geteuid() != 0 {
		return errors.New("serve must run as root")
	}
	for _, d := range []string{cfg.Root, cfg.State, filepath.Dir(cfg.CRI.Socket)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
	}
	hostProblems := hostChecks(ctx, cfg)
	st, err := store.Open(filepath.Join(cfg.Root, "peapod.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	reg := metrics.NewRegistry()

	mirrors := map[string][]string{}
	for host, m := range cfg.Registry.Mirrors {
		mirrors[host] = m.Endpoints
	}
	images, err := image.New(ctx, image.Options{
		Root:         filepath.Join(cfg.Root, "images"),
		Store:        st,
		Mirrors:      mirrors,
		Insecure:     cfg.Registry.Insecure,
		StallTimeout: cfg.Image.StallTimeout.Duration,
		Registerer:   reg,
	})
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	netw, err := network.New(network.Options{
		ConfDir:  cfg.CNI.ConfDir,
		BinDirs:  cfg.CNI.BinDirs,
		CacheDir: filepath.Join(cfg.Root, "cni-cache"),
		Bridge:   cfg.CNI.Bridge,
		Subnet:   cfg.CNI.Subnet,
		// Off: conf_dir belongs to the cluster's network plugin.
		NoDefaultConf: !cfg.CNI.DefaultConf,
	})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	var checks sync.WaitGroup
	defer checks.Wait()
	runtimes := map[string]sandbox.OCIRuntime{}
	ociRuntimes := map[string]*oci.Runtime{}
	unusable := map[string]error{} // handlers whose binary (or conmon) is not there
	for name, r := range cfg.Runtimes {
		isDefault := name == cfg.CRI.DefaultRuntime
		rt, err := oci.New(oci.Options{
			Name:          name,
			Path:          r.Path,
			Root:          cfg.RuntimeRoot(name),
			StateDir:      filepath.Join(cfg.State, "oci", name),
			CreateTimeout: r.CreateTimeout.Duration,
		})
		if err != nil {
			if berr := hostcheck.RuntimeBinary(name, r.Path); berr != nil {
				err = berr // says what is wrong with the binary, and the fix
			}
			unusable[name] = err
			if isDefault {
				klog.ErrorS(err, "Default runtime handler unusable: RuntimeReady stays false", "handler", name)
			} else {
				klog.InfoS("Runtime handler unavailable", "handler", name, "err", err)
			}
			continue
		}
		runtimes[name] = rt
		ociRuntimes[name] = rt
		// Check runs a throwaway container once and caches the answer; do
		// it now so the first pod does not pay for it. It runs on its own
		// context and shutdown waits for it, so a stop during start-up
		// never leaves its container or cgroup behind.
		checks.Add(1)
		go func() {
			defer checks.Done()
			err := rt.Check(context.Background())
			var tooOld *oci.VersionError
			if err != nil && (isDefault || errors.As(err, &tooOld)) {
				klog.ErrorS(err, "Runtime handler cannot run containers", "handler", name, "default", isDefault)
			}
		}()
	}
	pausePath, pauseArgs, err := findPause()
	if err != nil {
		return err
	}
	mgr, err := sandbox.New(ctx, sandbox.Options{
		Root:           cfg.Root,
		State:          cfg.State,
		Store:          st,
		Runtimes:       runtimes,
		DefaultRuntime: cfg.CRI.DefaultRuntime,
		Network:        netw,
		Images:         images,
		PausePath:      pausePath,
		PauseArgs:      pauseArgs,
		LXCFS:          sandbox.LXCFSOptions{Mode: cfg.Containers.LXCFS, Dir: cfg.Containers.LXCFSDir},
	})
	if err != nil {
		return fmt.Errorf("sandboxes: %w", err)
	}
	go mgr.RunLXCFS(ctx)
	for _, rt := range ociRuntimes {
		go func() {
			for id := range rt.Exits() {
				mgr.HandleExit(id)
			}
		}()
	}

	streams, err := streaming.Start(cfg.CRI.StreamAddress, mgr)
	if err != nil {
		return err
	}
	defer streams.Shutdown()

	calls := metrics.NewCRICalls(reg)
	server := cri.New(cri.Deps{
		Streams:   streams,
		Images:    images,
		Sandboxes: mgr,
		Network:   netw,
		Handlers: func(ctx context.Context) map[string]error {
			out := map[string]error{}
			for name := range cfg.Runtimes {
				rt, ok := ociRuntimes[name]
				if !ok {
					out[name] = unusable[name]
					continue
				}
				out[name] = rt.Check(ctx)
			}
			return out
		},
		DefaultHandler: cfg.CRI.DefaultRuntime,
		HostProblems:   hostProblems,
		CgroupDriver:   runtimeapi.CgroupDriver_CGROUPFS,
	})
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "peapod_cri_container_events_dropped_total",
		Help: "Container events a GetContainerEvents client missed because it fell more than 1000 events behind (the kubelet relists).",
	}, func() float64 { return float64(server.EventsDropped()) }))
	g := grpc.NewServer(
		grpc.ChainUnaryInterceptor(calls.Unary),
		grpc.ChainStreamInterceptor(calls.Stream),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxSendMsgSize(16<<20),
	)
	server.Register(g)
	ln, err := unixsock.Listen(cfg.CRI.Socket, 0o660)
	if err != nil {
		return err
	}
	go func() {
		if err := g.Serve(ln); err != nil {
			klog.ErrorS(err, "CRI server stopped")
		}
	}()

	gatherers := prometheus.Gatherers{reg}
	if agentProc != nil {
		gatherers = append(gatherers, agentProc.gatherer())
	}
	httpSrv := metrics.NewServer(reg, gatherers, func() error { return nil })
	registerNodeMetrics(cfg, reg, mgr, httpSrv.Mux)
	// Every handler is on the mux before the endpoint listens, so no
	// client ever sees a 404 for /pods during start-up.
	agentCtx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAgent()
	if agentProc != nil {
		httpSrv.Mux.Handle("GET /pods", agentProc.podsHandler())
		go agentProc.run(agentCtx)
	} else {
		httpSrv.Mux.HandleFunc("GET /pods", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the agent is disabled (agent.enabled = false): peapod runs as a CRI runtime only", http.StatusNotFound)
		})
		klog.InfoS("Agent disabled: CRI runtime only")
	}
	if err := httpSrv.Start(cfg.HTTP.Address); err != nil {
		g.Stop()
		return err
	}
	admin, err := startAdmin(cfg, images)
	if err != nil {
		g.Stop()
		return err
	}
	klog.InfoS("peapod serving", "socket", cfg.CRI.Socket, "stream", streams.Addr(), "http", httpSrv.Addr(), "root", cfg.Root, "state", cfg.State, "version", cri.Version)

	<-ctx.Done()
	klog.InfoS("Shutting down; containers keep running under conmon")
	// The agent first: it is a CRI client of this daemon.
	if agentProc != nil {
		stopAgent()
		agentProc.wait()
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		g.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	_ = admin.Shutdown(sctx)
	return nil
}

// hostChecks runs the host checks `peapod check` runs too (conmon,
// overlay upper dirs under the root dir, cgroup controllers) and logs
// each failure; serve keeps running, with RuntimeReady false naming them,
// so the kubelet reports the node NotReady with the reason.
func hostChecks(ctx context.Context, cfg *config.Config) []cri.HostProblem {
	var problems []cri.HostProblem
	for _, r := range hostcheck.Failed(hostcheck.Host(ctx, hostcheck.Options{Root: cfg.Root})) {
		klog.ErrorS(r.Err, "Host check failed: RuntimeReady stays false until it is fixed and peapod restarted", "check", r.What, "reason", r.Reason)
		problems = append(problems, cri.HostProblem{Reason: r.Reason, Message: r.Err.Error()})
	}
	// Missing capabilities cost features, not pods: logged, not a problem.
	if missing, err := hostcheck.MissingCapabilities("/proc/self/status"); err == nil {
		for _, m := range missing {
			klog.InfoS("Host capability warning", "warning", m)
		}
	}
	return problems
}

// findPause picks the pause binary: peapod-pause beside this executable,
// else this executable with the pause subcommand.
func findPause() (string, []string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, fmt.Errorf("locate own binary: %w", err)
	}
	helper := filepath.Join(filepath.Dir(self), "peapod-pause")
	if fi, err := os.Stat(helper); err == nil && fi.Mode().IsRegular() {
		return helper, nil, nil
	}
	// The pause confines itself with AllThreadsSyscall, which a binary
	// built with cgo refuses (ENOTSUP): such a peapod would report ready
	// and then fail every RunPodSandbox. Say so at start-up instead.
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_GETPID, 0, 0, 0); e == syscall.ENOTSUP {
		return "", nil, fmt.Errorf("no %s beside %s, and this peapod was built with cgo, so it cannot be its own pod pause: "+
			"build with CGO_ENABLED=0 (make build does) or install peapod-pause (CGO_ENABLED=0 go build ./cmd/peapod-pause) beside it", helper, self)
	}
	return self, []string{"pause"}, nil
}

// startAdmin serves the root-only admin API (image import/export) on a
// unix socket: it writes to the image store, so it is not on the TCP
// endpoint that any local user or hostNetwork pod could reach.
func startAdmin(cfg *config.Config, images *image.Service) (*http.Server, error) {
	ln, err := unixsock.Listen(adminSocket(cfg), 0o600)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /images/import", func(w http.ResponseWriter, r *http.Request) {
		imgs, err := images.Import(r.Context(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, img := range imgs {
			fmt.Fprintf(w, "%s\t%s\n", img.ID, joinTags(img.RepoTags))
		}
	})
	mux.HandleFunc("GET /images/export", func(w http.ResponseWriter, r *http.Request) {
		refs := r.URL.Query()["ref"]
		for _, ref := range refs {
			if _, err := images.Get(ref); err != nil {
				http.Error(w, fmt.Sprintf("%s: %v", ref, err), http.StatusNotFound)
				return
			}
		}
		w.Header().Set("Content-Type", "application/x-tar")
		if err := images.Export(r.Context(), w, refs); err != nil {
			klog.ErrorS(err, "Export failed mid-stream", "refs", refs)
		}
	})
	mux.HandleFunc("GET /images", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(images.List())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Admin server stopped")
		}
	}()
	return srv, nil
}

func joinTags(tags []string) string {
	if len(tags) == 0 {
		return "<none>"
	}
	out := tags[0]
	for _, t := range tags[1:] {
		out += "," + t
	}
	return out
}
