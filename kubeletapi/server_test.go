package kubeletapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
)

// recordingAuthz allows everything and remembers what it was asked.
type recordingAuthz struct {
	mu    sync.Mutex
	asked []attributes
}

func (r *recordingAuthz) authorize(_ context.Context, a attributes) (decision, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, a)
	return decisionAllow, "", nil
}

func (r *recordingAuthz) lastAsked() attributes {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.asked) == 0 {
		return attributes{}
	}
	return r.asked[len(r.asked)-1]
}

// testCA signs client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// clientCert is a client certificate for cn in groups, signed by ca.
func (ca *testCA) clientCert(t *testing.T, cn string, groups ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type tlsTestOptions struct {
	rt       *fakeRuntime
	pods     *fakePods
	handlers map[string]http.Handler
}

// tlsTestServer is the whole server on a loopback port with a self-signed
// serving certificate, a client CA, token authentication that accepts
// "good-token" (as user "sa") and an authorizer that allows all.
type tlsTestServer struct {
	srv        *Server
	addr       string
	clientCA   *testCA
	servingCAs *x509.CertPool
	authz      *recordingAuthz
}

func newTLSTestServer(t *testing.T, o tlsTestOptions) *tlsTestServer {
	t.Helper()
	ca := newTestCA(t, "client-ca")
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	if o.rt == nil {
		o.rt = &fakeRuntime{}
	}
	if o.pods == nil {
		o.pods = &fakePods{}
	}
	opts := Options{ClientCAFile: caFile, NodeName: "node-a", NodeIPs: []string{"127.0.0.1", "not-an-ip"}, Runtime: o.rt, Pods: o.pods, Handlers: o.handlers}
	ts, err := newTLSSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	authz := &recordingAuthz{}
	s, err := newServer(opts, ts, &requestAuthenticator{x509: true, tokens: &fakeTokens{good: "good-token"}}, authz)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	// The self-signed chain is [serving certificate, its CA].
	chain := ts.selfSigned.Certificate
	if len(chain) != 2 {
		t.Fatalf("self-signed chain of %d", len(chain))
	}
	caCert, err := x509.ParseCertificate(chain[1])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &tlsTestServer{srv: s, addr: ln.Addr().String(), clientCA: ca, servingCAs: pool, authz: authz}
}

func (ts *tlsTestServer) client(certs ...tls.Certificate) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ts.servingCAs, ServerName: "node-a", Certificates: certs},
			ForceAttemptHTTP2: true,
		},
	}
}

func get(t *testing.T, c *http.Client, method, url, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestServerTLS(t *testing.T) {
	pods := &fakePods{pods: []v1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1"}, Status: v1.PodStatus{Phase: v1.PodRunning}}}}
	ts := newTLSTestServer(t, tlsTestOptions{pods: pods, handlers: map[string]http.Handler{
		"/metrics": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "# metrics") }),
		"/stats/":  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "stats of "+r.URL.Path) }),
	}})
	base := "https://" + ts.addr
	apiserver := ts.clientCA.clientCert(t, "kube-apiserver-kubelet-client", "kubelet-api-admins")

	t.Run("client certificate", func(t *testing.T) {
		resp, body := get(t, ts.client(apiserver), http.MethodGet, base+"/healthz", "")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		a := ts.authz.lastAsked()
		if a.User.Name != "kube-apiserver-kubelet-client" || !reflect.DeepEqual(a.User.Groups, []string{"kubelet-api-admins", groupAllAuthenticated}) {
			t.Errorf("user %+v", a.User)
		}
		if a.Verb != "get" || a.Resource != "nodes" || a.Name != "node-a" || a.Subresource != "healthz" {
			t.Errorf("attributes %+v", a)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("protocol %s, want HTTP/2 offered", resp.Proto)
		}
	})
	t.Run("bearer token", func(t *testing.T) {
		resp, body := get(t, ts.client(), http.MethodGet, base+"/pods", "good-token")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		var list v1.PodList
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatal(err)
		}
		if list.Kind != "PodList" || list.APIVersion != "v1" || len(list.Items) != 1 || list.Items[0].Name != "p" || list.Items[0].Status.Phase != v1.PodRunning {
			t.Errorf("pods %+v", list)
		}
		if a := ts.authz.lastAsked(); a.User.Name != "system:serviceaccount:ns:sa" || a.Subresource != "pods" {
			t.Errorf("attributes %+v", a)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		resp, body := get(t, ts.client(), http.MethodGet, base+"/healthz", "")
		if resp.StatusCode != 401 || body != "Unauthorized" {
			t.Errorf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		resp, _ := get(t, ts.client(), http.MethodGet, base+"/pods", "bad")
		if resp.StatusCode != 401 {
			t.Errorf("got %d", resp.StatusCode)
		}
	})
	t.Run("handlers", func(t *testing.T) {
		c := ts.client(apiserver)
		for path, want := range map[string]string{"/metrics": "# metrics", "/stats/summary": "stats of /stats/summary"} {
			resp, body := get(t, c, http.MethodGet, base+path, "")
			if resp.StatusCode != 200 || body != want {
				t.Errorf("%s: got %d %q", path, resp.StatusCode, body)
			}
		}
		if resp, _ := get(t, c, http.MethodPost, base+"/metrics", ""); resp.StatusCode != 405 {
			t.Errorf("POST /metrics: %d", resp.StatusCode)
		}
		if a := ts.authz.lastAsked(); a.Verb != "create" || a.Subresource != "metrics" {
			t.Errorf("attributes %+v", a)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := newTestCA(t, "other").clientCert(t, "mallory", "system:masters")
		c := ts.client()
		// Offered whatever the server's acceptable CAs (Go's client would
		// otherwise send none).
		c.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &other, nil
		}
		req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("request with an untrusted client certificate: %d", resp.StatusCode)
		}
	})
	t.Run("TLS 1.1", func(t *testing.T) {
		conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: ts.servingCAs, ServerName: "node-a", MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
	t.Run("self-signed certificate names", func(t *testing.T) {
		conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: ts.servingCAs, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("the node IP is not in the serving certificate: %v", err)
		}
		conn.Close()
	})
}

func TestRunStopsWithContext(t *testing.T) {
	s, err := New(Options{
		Addr:     "127.0.0.1:0",
		Client:   offlineClient(t),
		NodeName: "node-a",
		Runtime:  &fakeRuntime{},
		Pods:     &fakePods{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// offlineClient is a clientset for an API server nobody listens to: New
// needs one, these tests never call it.
func offlineClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewChecksOptions(t *testing.T) {
	ok := Options{Client: offlineClient(t), NodeName: "n", Runtime: &fakeRuntime{}, Pods: &fakePods{}}
	tests := []struct {
		name   string
		change func(*Options)
		err    string
	}{
		{"ok", func(*Options) {}, ""},
		{"no client", func(o *Options) { o.Client = nil }, "no client"},
		{"no node", func(o *Options) { o.NodeName = "" }, "no node name"},
		{"no runtime", func(o *Options) { o.Runtime = nil }, "no runtime"},
		{"no pods", func(o *Options) { o.Pods = nil }, "no pod source"},
		{"cert without key", func(o *Options) { o.CertFile = "/x.crt" }, "set both or neither"},
		{"missing cert", func(o *Options) { o.CertFile, o.KeyFile = "/nonexistent.crt", "/nonexistent.key" }, "no such file"},
		{"missing client CA", func(o *Options) { o.ClientCAFile = "/nonexistent-ca.crt" }, "no such file"},
		{"conflicting handler", func(o *Options) {
			o.Handlers = map[string]http.Handler{"/containerLogs/{a}/{b}/{c}": http.NotFoundHandler()}
		}, "conflicts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.change(&o)
			s, err := New(o)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.o.Addr != DefaultAddr {
					t.Errorf("addr %q", s.o.Addr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestHandlersReplaceBuiltins(t *testing.T) {
	s, err := newTestServer(&fakeRuntime{}, &fakePods{}, map[string]http.Handler{
		"/healthz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "[+]syncloop ok") }),
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/healthz": "[+]syncloop ok", "/healthz/ping": "ok"} {
		rec := newRecorder(s, http.MethodGet, path)
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
}

// TestTLSReload: a rewritten serving certificate or client CA serves from
// the next handshake on; an unreadable one leaves the last good one.
func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	stamp := time.Now()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		stamp = stamp.Add(time.Second) // a new mtime, however coarse the clock
		if err := os.Chtimes(name, stamp, stamp); err != nil {
			t.Fatal(err)
		}
	}
	writeCert := func(host string) {
		c, k, err := certutil.GenerateSelfSignedCertKey(host, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		write(certFile, c)
		write(keyFile, k)
	}
	writeCert("first")
	write(caFile, newTestCA(t, "ca-1").pem)
	src, err := newTLSSource(Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	servedName := func() string {
		cfg, err := src.forClient(nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ClientAuth != tls.VerifyClientCertIfGiven || cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("client auth %v, min version %x", cfg.ClientAuth, cfg.MinVersion)
		}
		leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.DNSNames[0]
	}
	if n := servedName(); n != "first" {
		t.Fatalf("serving %q", n)
	}
	writeCert("second")
	if n := servedName(); n != "second" {
		t.Errorf("after rewrite serving %q", n)
	}
	write(certFile, []byte("garbage"))
	if n := servedName(); n != "second" {
		t.Errorf("after a broken rewrite serving %q", n)
	}
	caBefore, _ := src.forClient(nil)
	write(caFile, newTestCA(t, "ca-2").pem)
	writeCert("third")
	caAfter, _ := src.forClient(nil)
	if caBefore.ClientCAs.Equal(caAfter.ClientCAs) {
		t.Error("client CA not reloaded")
	}
}

func newRecorder(s *Server, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}
