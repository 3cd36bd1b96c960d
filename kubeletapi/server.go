// Package kubeletapi is the kubelet's HTTPS API on the agent (port 10250):
// what the API server reaches a node through for kubectl logs, exec,
// attach and port-forward, and what metrics-server and Prometheus scrape.
//
// Every request is authenticated (client certificate, else a bearer token
// checked with a TokenReview) and authorized (a SubjectAccessReview on
// nodes/<node>/<subresource>) the way the kubelet does it with anonymous
// auth off and Webhook authorization; then:
//
//	GET       /healthz, /healthz/ping         "ok"
//	GET       /pods                           the node's pods (PodList)
//	GET       /containerLogs/{ns}/{pod}/{c}   a container's log (container_logs.go)
//	GET, POST /exec/{ns}/{pod}[/{uid}]/{c}    proxied to the runtime's streaming server
//	GET, POST /attach/{ns}/{pod}[/{uid}]/{c}  (stream.go)
//	GET, POST /portForward/{ns}/{pod}[/{uid}]
//	GET       Options.Handlers' paths         /metrics, /stats/summary… (made elsewhere)
package kubeletapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	criapi "k8s.io/cri-api/pkg/apis"
	"k8s.io/klog/v2"
)

// Options configure the server.
type Options struct {
	// Addr is where to listen; default "0.0.0.0:10250".
	Addr string
	// CertFile and KeyFile are the serving certificate. Both empty: a
	// self-signed certificate for NodeName and NodeIPs is made in memory
	// at start, as the kubelet does when given none.
	CertFile, KeyFile string
	// ClientCAFile verifies client certificates (the API server's
	// kubelet-client certificate is signed by it). Empty: bearer tokens
	// only.
	ClientCAFile string
	// Client makes the TokenReviews (authentication of bearer tokens) and
	// SubjectAccessReviews (authorization), with the node's credentials.
	Client kubernetes.Interface
	// NodeName is the node's name: the nodes/<name> object requests are
	// authorized against.
	NodeName string
	// NodeIPs go into the self-signed certificate.
	NodeIPs []string
	// Runtime serves Exec, Attach and PortForward (streaming URLs),
	// ContainerStatus (log paths, whether a followed container still runs)
	// and ListPodSandbox (port-forward's sandbox).
	Runtime criapi.RuntimeService
	// Pods is what the server reads of the agent's pods.
	Pods PodSource
	// Handlers are extra read-only (GET) endpoints by path, behind the same
	// authentication and authorization: "/metrics", "/stats/summary"…
	// A path ending in "/" serves its subtree. They may replace /healthz
	// and /pods.
	Handlers map[string]http.Handler
}

// PodSource is what the server reads of the agent's pods (agent.Agent
// implements it).
type PodSource interface {
	// Pods are the node's pods with their status (containerStatuses carry
	// containerID "<runtime>://<id>" and restartCount).
	Pods() *v1.PodList
	// LogDir is the pod's log directory (<pod_logs_dir>/<ns>_<name>_<uid>);
	// container attempt N logs to <dir>/<container>/<N>.log in the CRI log
	// format.
	LogDir(pod *v1.Pod) string
}

// DefaultAddr is the kubelet's port on all addresses.
const DefaultAddr = "0.0.0.0:10250"

// Server is the kubelet API of one node.
type Server struct {
	o       Options
	tls     *tlsSource
	handler http.Handler

	// stopping ends when Run starts to shut down: followed logs stop then
	// instead of holding the shutdown until its deadline.
	stopping context.Context
	stop     context.CancelFunc
}

// The kubelet's http.Server limits.
const (
	idleTimeout    = 90 * time.Second
	rwTimeout      = 4 * 60 * time.Minute
	maxHeaderBytes = 1 << 20
	// shutdownGrace is how long Run waits for requests in flight.
	shutdownGrace = 5 * time.Second
)

// New checks o, loads (or makes) the certificates and builds the handlers.
func New(o Options) (*Server, error) {
	switch {
	case o.Client == nil:
		return nil, errors.New("kubeletapi: no client: webhook authentication and authorization need one")
	case o.NodeName == "":
		return nil, errors.New("kubeletapi: no node name")
	case o.Runtime == nil:
		return nil, errors.New("kubeletapi: no runtime")
	case o.Pods == nil:
		return nil, errors.New("kubeletapi: no pod source")
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	ts, err := newTLSSource(o)
	if err != nil {
		return nil, err
	}
	tokens := o.Client.AuthenticationV1().TokenReviews()
	sars := o.Client.AuthorizationV1().SubjectAccessReviews()
	authn := &requestAuthenticator{
		x509: o.ClientCAFile != "",
		tokens: newTokenReviewer(func(ctx context.Context, r *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
			return tokens.Create(ctx, r, metav1.CreateOptions{})
		}, nil),
	}
	authz := newSARAuthorizer(func(ctx context.Context, r *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error) {
		return sars.Create(ctx, r, metav1.CreateOptions{})
	}, nil)
	return newServer(o, ts, authn, authz)
}

// newServer is New with the authenticator and authorizer given (tests
// stub them).
func newServer(o Options, ts *tlsSource, authn authenticator, authz authorizer) (*Server, error) {
	s := &Server{o: o, tls: ts}
	s.stopping, s.stop = context.WithCancel(context.Background())
	mux, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = withAuth(o.NodeName, authn, authz, mux)
	return s, nil
}

// routes is the request multiplexer behind authentication.
func (s *Server) routes() (mux *http.ServeMux, err error) {
	mux = http.NewServeMux()
	// A pattern that conflicts with another makes ServeMux panic: an
	// error from New instead.
	defer func() {
		if r := recover(); r != nil {
			mux, err = nil, fmt.Errorf("kubeletapi: handlers: %v", r)
		}
	}()
	builtin := map[string]http.HandlerFunc{
		healthzPath:           s.healthz,
		healthzPath + "/ping": s.healthz,
		podsPath:              s.pods,
	}
	for p, h := range builtin {
		if _, replaced := s.o.Handlers[p]; !replaced {
			mux.Handle("GET "+p, h)
		}
	}
	for p, h := range s.o.Handlers {
		mux.Handle("GET "+p, h)
	}
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.containerLogs)
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		mux.HandleFunc(m+" /exec/{namespace}/{pod}/{container}", s.exec)
		mux.HandleFunc(m+" /exec/{namespace}/{pod}/{uid}/{container}", s.exec)
		mux.HandleFunc(m+" /attach/{namespace}/{pod}/{container}", s.attach)
		mux.HandleFunc(m+" /attach/{namespace}/{pod}/{uid}/{container}", s.attach)
		mux.HandleFunc(m+" /portForward/{namespace}/{pod}", s.portForward)
		mux.HandleFunc(m+" /portForward/{namespace}/{pod}/{uid}", s.portForward)
	}
	return mux, nil
}

// Run serves until ctx ends, then shuts down: requests in flight get
// shutdownGrace to finish, followed logs end at once. Proxied exec, attach
// and port-forward streams are connections of their own and run on until
// their ends close them.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.o.Addr)
	if err != nil {
		return fmt.Errorf("kubeletapi: %w", err)
	}
	return s.serve(ctx, ln)
}

func (s *Server) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:        s.handler,
		TLSConfig:      s.tls.serverConfig(),
		IdleTimeout:    idleTimeout,
		ReadTimeout:    rwTimeout,
		WriteTimeout:   rwTimeout,
		MaxHeaderBytes: maxHeaderBytes,
	}
	klog.InfoS("Serving the kubelet API", "address", ln.Addr().String(), "node", s.o.NodeName)
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		s.stop()
		return fmt.Errorf("kubeletapi: %w", err)
	case <-ctx.Done():
	}
	s.stop()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		klog.InfoS("The kubelet API did not shut down in time; closing its connections", "err", err)
		_ = srv.Close()
	}
	<-done
	klog.InfoS("Stopped serving the kubelet API", "address", ln.Addr().String())
	return nil
}
