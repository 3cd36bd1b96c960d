package kubeletapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	asn1util "k8s.io/apimachinery/pkg/apis/asn1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestRequestAttributes: the kubelet's AuthzTestCases with fine-grained
// authorization, plus the paths this server serves.
func TestRequestAttributes(t *testing.T) {
	paths := map[string][]string{
		"/attach/ns/p/c":          {"proxy"},
		"/attach/ns/p/uid/c":      {"proxy"},
		"/checkpoint/ns/p/c":      {"checkpoint"},
		"/configz":                {"configz", "proxy"},
		"/flagz":                  {"configz"},
		"/statusz":                {"statusz"},
		"/containerLogs/ns/p/c":   {"proxy"},
		"/debug/flags/v":          {"proxy"},
		"/debug/pprof/heap":       {"proxy"},
		"/exec/ns/p/c":            {"proxy"},
		"/exec/ns/p/uid/c":        {"proxy"},
		"/healthz":                {"healthz", "proxy"},
		"/healthz/log":            {"healthz", "proxy"},
		"/healthz/ping":           {"healthz", "proxy"},
		"/healthz/syncloop":       {"healthz", "proxy"},
		"/healthzz":               {"proxy"},
		"/logs/":                  {"log"},
		"/logs/messages":          {"log"},
		"/metrics":                {"metrics"},
		"/metrics/slis":           {"metrics"},
		"/metrics/cadvisor":       {"metrics"},
		"/metrics/probes":         {"metrics"},
		"/metrics/resource":       {"metrics"},
		"/metricsfoo":             {"proxy"},
		"/pods":                   {"pods", "proxy"},
		"/pods/":                  {"pods", "proxy"},
		"/allocatedPods/ns/p":     {"pods", "proxy"},
		"/portForward/ns/p":       {"proxy"},
		"/portForward/ns/p/uid":   {"proxy"},
		"/run/ns/p/c":             {"proxy"},
		"/runningpods/":           {"pods", "proxy"},
		"/spec/":                  {"proxy"},
		"/stats":                  {"stats"},
		"/stats/":                 {"stats"},
		"/stats/summary":          {"stats"},
		"/":                       {"proxy"},
		"/no/such/kubelet/thing/": {"proxy"},
	}
	verbs := map[string]string{
		http.MethodPost:   "create",
		http.MethodGet:    "get",
		http.MethodPut:    "update",
		http.MethodPatch:  "patch",
		http.MethodDelete: "delete",
		http.MethodHead:   "",
	}
	u := &userInfo{Name: "alice"}
	for path, subs := range paths {
		for method, verb := range verbs {
			t.Run(method+" "+path, func(t *testing.T) {
				r := httptest.NewRequest(method, path, nil)
				attrs := requestAttributes("node-a", u, r)
				var got []string
				for _, a := range attrs {
					got = append(got, a.Subresource)
					want := attributes{User: u, Verb: verb, Resource: "nodes", Subresource: a.Subresource, Name: "node-a", Path: path}
					if a != want {
						t.Errorf("attributes %+v, want %+v", a, want)
					}
				}
				if !reflect.DeepEqual(got, subs) {
					t.Errorf("subresources %v, want %v", got, subs)
				}
			})
		}
	}
}

// stubAuth is an authenticator and authorizer answering from functions.
type stubAuth struct {
	authn func(*http.Request) (*userInfo, bool, error)
	authz func(attributes) (decision, error)

	mu    sync.Mutex
	asked []attributes
}

func (s *stubAuth) authenticate(r *http.Request) (*userInfo, bool, error) { return s.authn(r) }

func (s *stubAuth) authorize(_ context.Context, a attributes) (decision, string, error) {
	s.mu.Lock()
	s.asked = append(s.asked, a)
	s.mu.Unlock()
	d, err := s.authz(a)
	return d, "", err
}

func TestWithAuth(t *testing.T) {
	bob := func(*http.Request) (*userInfo, bool, error) { return &userInfo{Name: "bob"}, true, nil }
	allowSub := func(sub string) func(attributes) (decision, error) {
		return func(a attributes) (decision, error) {
			if a.Subresource == sub {
				return decisionAllow, nil
			}
			return decisionNoOpinion, nil
		}
	}
	tests := []struct {
		name      string
		method    string
		path      string
		authn     func(*http.Request) (*userInfo, bool, error)
		authz     func(attributes) (decision, error)
		code      int
		body      string
		wantAsked []string
	}{
		{
			name: "no credentials", path: "/pods",
			authn: func(*http.Request) (*userInfo, bool, error) { return nil, false, nil },
			code:  401, body: "Unauthorized",
		},
		{
			name: "bad credentials", path: "/pods",
			authn: func(*http.Request) (*userInfo, bool, error) { return nil, false, errors.New("invalid bearer token") },
			code:  401, body: "Unauthorized",
		},
		{
			name: "healthz needs credentials too", path: "/healthz",
			authn: func(*http.Request) (*userInfo, bool, error) { return nil, false, nil },
			code:  401, body: "Unauthorized",
		},
		{
			name: "unknown path needs credentials", path: "/nope",
			authn: func(*http.Request) (*userInfo, bool, error) { return nil, false, nil },
			code:  401, body: "Unauthorized",
		},
		{
			name: "forbidden", path: "/pods", authn: bob,
			authz: func(attributes) (decision, error) { return decisionNoOpinion, nil },
			code:  403, body: "Forbidden (user=bob, verb=get, resource=nodes, subresource(s)=[pods proxy])\n",
			wantAsked: []string{"pods", "proxy"},
		},
		{
			name: "denied", method: http.MethodPost, path: "/exec/ns/p/c", authn: bob,
			authz: func(attributes) (decision, error) { return decisionDeny, nil },
			code:  403, body: "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])\n",
			wantAsked: []string{"proxy"},
		},
		{
			name: "fine-grained subresource allows", path: "/pods", authn: bob, authz: allowSub("pods"),
			code: 200, wantAsked: []string{"pods"},
		},
		{
			name: "proxy allows what pods does not", path: "/pods", authn: bob, authz: allowSub("proxy"),
			code: 200, wantAsked: []string{"pods", "proxy"},
		},
		{
			name: "healthz allowed", path: "/healthz", authn: bob, authz: allowSub("healthz"),
			code: 200, body: "ok", wantAsked: []string{"healthz"},
		},
		{
			name: "authorization error", path: "/healthz", authn: bob,
			authz: func(attributes) (decision, error) { return decisionNoOpinion, errors.New("api server down") },
			code:  500, body: "Authorization error (user=bob, verb=get, resource=nodes, subresource=healthz)",
			wantAsked: []string{"healthz"},
		},
		{
			name: "unknown path once authorized", path: "/spec/", authn: bob, authz: allowSub("proxy"),
			code: 404, wantAsked: []string{"proxy"},
		},
		{
			name: "read-only handler refuses POST once authorized", method: http.MethodPost, path: "/metrics", authn: bob, authz: allowSub("metrics"),
			code: 405, wantAsked: []string{"metrics"},
		},
		{
			name: "read-only handler", path: "/metrics", authn: bob, authz: allowSub("metrics"),
			code: 200, body: "metrics here", wantAsked: []string{"metrics"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := &stubAuth{authn: tt.authn, authz: tt.authz}
			s, err := newServer(Options{NodeName: "node-a", Runtime: &fakeRuntime{}, Pods: &fakePods{},
				Handlers: map[string]http.Handler{"/metrics": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					_, _ = w.Write([]byte("metrics here"))
				})},
			}, nil, stub, stub)
			if err != nil {
				t.Fatal(err)
			}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			rec := httptest.NewRecorder()
			s.handler.ServeHTTP(rec, httptest.NewRequest(method, tt.path, nil))
			if rec.Code != tt.code {
				t.Errorf("code %d, want %d (body %q)", rec.Code, tt.code, rec.Body.String())
			}
			if tt.body != "" && rec.Body.String() != tt.body {
				t.Errorf("body %q, want %q", rec.Body.String(), tt.body)
			}
			var asked []string
			for _, a := range stub.asked {
				asked = append(asked, a.Subresource)
				if a.Name != "node-a" || a.Resource != "nodes" || a.User.Name != "bob" {
					t.Errorf("asked about %+v", a)
				}
			}
			if !reflect.DeepEqual(asked, tt.wantAsked) {
				t.Errorf("authorizer asked about %v, want %v", asked, tt.wantAsked)
			}
		})
	}
}

// fakeTokens accepts one token.
type fakeTokens struct {
	good  string
	calls int
}

func (f *fakeTokens) authenticateToken(_ context.Context, token string) (*userInfo, bool, error) {
	f.calls++
	if token == f.good {
		return &userInfo{Name: "system:serviceaccount:ns:sa", Groups: []string{"system:serviceaccounts"}}, true, nil
	}
	return nil, false, nil
}

func TestRequestAuthenticator(t *testing.T) {
	uidAttr := pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier(asn1util.X509UID()), Value: "u-123"}
	client := &x509.Certificate{Raw: []byte("der"), Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Names: []pkix.AttributeTypeAndValue{uidAttr}}}
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{client}}}
	wsProto := func(token string) string {
		return bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))
	}
	tests := []struct {
		name       string
		x509       bool
		tls        *tls.ConnectionState
		header     map[string]string
		wantUser   string
		wantGroups []string
		wantUID    string
		wantErr    bool
		wantCalls  int
		wantHeader map[string]string // after authentication
	}{
		{name: "nothing", x509: true},
		{
			name: "client certificate", x509: true, tls: verified,
			wantUser: "kube-apiserver-kubelet-client", wantGroups: []string{"system:masters", groupAllAuthenticated}, wantUID: "u-123",
		},
		{
			name: "client certificate wins over a token", x509: true, tls: verified, header: map[string]string{"Authorization": "Bearer good"},
			wantUser: "kube-apiserver-kubelet-client", wantGroups: []string{"system:masters", groupAllAuthenticated}, wantUID: "u-123",
			wantHeader: map[string]string{"Authorization": "Bearer good"},
		},
		{
			name: "client certificate without a client CA", tls: verified,
		},
		{
			name: "unverified certificate", x509: true, tls: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{client}},
		},
		{
			name: "bearer token", header: map[string]string{"Authorization": "Bearer good"},
			wantUser: "system:serviceaccount:ns:sa", wantGroups: []string{"system:serviceaccounts", groupAllAuthenticated}, wantCalls: 1,
			wantHeader: map[string]string{"Authorization": ""},
		},
		{
			name: "bearer is case-insensitive", header: map[string]string{"Authorization": "bearer good"},
			wantUser: "system:serviceaccount:ns:sa", wantGroups: []string{"system:serviceaccounts", groupAllAuthenticated}, wantCalls: 1,
		},
		{
			name: "bad token", header: map[string]string{"Authorization": "Bearer bad"},
			wantErr: true, wantCalls: 1, wantHeader: map[string]string{"Authorization": "Bearer bad"},
		},
		{name: "basic auth is not ours", header: map[string]string{"Authorization": "Basic Zm9vOmJhcg=="}},
		{name: "empty bearer", header: map[string]string{"Authorization": "Bearer "}},
		{
			name:     "websocket subprotocol token",
			header:   map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", wsProtocolHeader: "v5.channel.k8s.io, " + wsProto("good")},
			wantUser: "system:serviceaccount:ns:sa", wantGroups: []string{"system:serviceaccounts", groupAllAuthenticated}, wantCalls: 1,
			wantHeader: map[string]string{wsProtocolHeader: "v5.channel.k8s.io"},
		},
		{
			name:    "websocket token alone",
			header:  map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", wsProtocolHeader: wsProto("good")},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokens := &fakeTokens{good: "good"}
			a := &requestAuthenticator{x509: tt.x509, tokens: tokens}
			r := httptest.NewRequest(http.MethodGet, "/pods", nil)
			r.TLS = tt.tls
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			u, ok, err := a.authenticate(r)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if ok != (tt.wantUser != "") {
				t.Fatalf("ok = %v, user %+v", ok, u)
			}
			if ok {
				if u.Name != tt.wantUser || !reflect.DeepEqual(u.Groups, tt.wantGroups) || u.UID != tt.wantUID {
					t.Errorf("user %+v, want %s %v uid %q", u, tt.wantUser, tt.wantGroups, tt.wantUID)
				}
			}
			if tokens.calls != tt.wantCalls {
				t.Errorf("%d token reviews, want %d", tokens.calls, tt.wantCalls)
			}
			for k, v := range tt.wantHeader {
				if got := r.Header.Get(k); got != v {
					t.Errorf("header %s = %q after authentication, want %q", k, got, v)
				}
			}
		})
	}
	t.Run("certificate credential id", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/pods", nil)
		r.TLS = verified
		u, _, _ := (&requestAuthenticator{x509: true}).authenticate(r)
		if got := u.Extra[credentialIDKey]; len(got) != 1 || !strings.HasPrefix(got[0], "X509SHA256=") {
			t.Errorf("credential id %v", got)
		}
	})
}

func TestWithAuthenticatedGroup(t *testing.T) {
	tests := []struct {
		in   userInfo
		want []string
	}{
		{userInfo{Name: "a"}, []string{groupAllAuthenticated}},
		{userInfo{Name: "a", Groups: []string{"g"}}, []string{"g", groupAllAuthenticated}},
		{userInfo{Name: "a", Groups: []string{groupAllAuthenticated, "g"}}, []string{groupAllAuthenticated, "g"}},
		{userInfo{Name: userAnonymous}, nil},
	}
	for _, tt := range tests {
		in := tt.in
		if got := withAuthenticatedGroup(&in).Groups; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%+v: groups %v, want %v", tt.in, got, tt.want)
		}
		if !reflect.DeepEqual(in, tt.in) {
			t.Errorf("input changed: %+v", in)
		}
	}
}

// fakeClock is a settable time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var fastBackoff = wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 3}

func TestTokenReviewerCache(t *testing.T) {
	type answer struct {
		status authenticationv1.TokenReviewStatus
		err    error
	}
	ok := answer{status: authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "alice", UID: "1", Groups: []string{"devs"}, Extra: map[string]authenticationv1.ExtraValue{"k": {"v"}}}}}
	rejected := answer{status: authenticationv1.TokenReviewStatus{Authenticated: false}}
	rejectedWithError := answer{status: authenticationv1.TokenReviewStatus{Authenticated: false, Error: "token expired"}}
	failed := answer{err: errors.New("connection refused")}
	unavailable := answer{err: apierrors.NewInternalError(errors.New("etcd"))}

	tests := []struct {
		name string
		// answers the API server gives, one per review.
		answers []answer
		// steps: wait this long, authenticate; ok/err expected and the
		// number of reviews made so far.
		steps []struct {
			after   time.Duration
			ok      bool
			err     bool
			reviews int
		}
	}{
		{
			name: "success cached 2m", answers: []answer{ok, ok},
			steps: []struct {
				after   time.Duration
				ok, err bool
				reviews int
			}{{0, true, false, 1}, {time.Minute, true, false, 1}, {61 * time.Second, true, false, 2}},
		},
		{
			name: "rejection cached 2m, as the kubelet's", answers: []answer{rejected, ok},
			steps: []struct {
				after   time.Duration
				ok, err bool
				reviews int
			}{{0, false, false, 1}, {119 * time.Second, false, false, 1}, {time.Second, true, false, 2}},
		},
		{
			name: "rejection with an error is not cached", answers: []answer{rejectedWithError, rejectedWithError},
			steps: []struct {
				after   time.Duration
				ok, err bool
				reviews int
			}{{0, false, true, 1}, {0, false, true, 2}},
		},
		{
			name: "failure not retried and not cached", answers: []answer{failed, ok},
			steps: []struct {
				after   time.Duration
				ok, err bool
				reviews int
			}{{0, false, true, 1}, {0, true, false, 2}},
		},
		{
			name: "internal error retried", answers: []answer{unavailable, unavailable, ok},
			steps: []struct {
				after   time.Duration
				ok, err bool
				reviews int
			}{{0, true, false, 3}, {0, true, false, 3}},
		},
		{
			name: "retries run out", answers: []answer{unavailable, unavailable, unavailable, ok},
			steps: []struct {
				after   time.Duration
				ok, err bool
				reviews int
			}{{0, false, true, 3}, {0, true, false, 4}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			reviews := 0
			tr := newTokenReviewer(func(_ context.Context, r *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
				if r.Spec.Token != "tok" || len(r.Spec.Audiences) != 0 {
					t.Errorf("review of %+v", r.Spec)
				}
				a := tt.answers[reviews]
				reviews++
				if a.err != nil {
					return nil, a.err
				}
				return &authenticationv1.TokenReview{Status: a.status}, nil
			}, clock.now)
			tr.backoff = fastBackoff
			for i, st := range tt.steps {
				clock.step(st.after)
				u, ok, err := tr.authenticateToken(context.Background(), "tok")
				if ok != st.ok || (err != nil) != st.err || reviews != st.reviews {
					t.Fatalf("step %d: ok=%v err=%v after %d reviews; want ok=%v err=%v after %d", i, ok, err, reviews, st.ok, st.err, st.reviews)
				}
				if ok && (u.Name != "alice" || u.UID != "1" || !reflect.DeepEqual(u.Groups, []string{"devs"}) || !reflect.DeepEqual(u.Extra, map[string][]string{"k": {"v"}})) {
					t.Errorf("user %+v", u)
				}
			}
		})
	}
}

// TestTokenReviewerShared: concurrent requests with one token share one
// review.
func TestTokenReviewerShared(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	reviews := 0
	tr := newTokenReviewer(func(context.Context, *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
		mu.Lock()
		reviews++
		mu.Unlock()
		<-release
		return &authenticationv1.TokenReview{Status: authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "a"}}}, nil
	}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok, err := tr.authenticateToken(context.Background(), "tok"); !ok || err != nil {
				errs <- fmt.Errorf("ok=%v err=%v", ok, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reviews != 1 {
		t.Errorf("%d reviews for 5 concurrent requests", reviews)
	}
}

func TestSARAuthorizer(t *testing.T) {
	alice := &userInfo{Name: "alice", UID: "1", Groups: []string{"devs", groupAllAuthenticated}, Extra: map[string][]string{"k": {"v"}}}
	attrs := attributes{User: alice, Verb: "create", Resource: "nodes", Subresource: "proxy", Name: "node-a", Path: "/exec/ns/p/c"}
	wantSpec := authorizationv1.SubjectAccessReviewSpec{
		User: "alice", UID: "1", Groups: []string{"devs", groupAllAuthenticated},
		Extra:              map[string]authorizationv1.ExtraValue{"k": {"v"}},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "create", Version: "v1", Resource: "nodes", Subresource: "proxy", Name: "node-a"},
	}
	allowed := authorizationv1.SubjectAccessReviewStatus{Allowed: true}
	denied := authorizationv1.SubjectAccessReviewStatus{Denied: true, Reason: "no"}
	noOpinion := authorizationv1.SubjectAccessReviewStatus{}
	both := authorizationv1.SubjectAccessReviewStatus{Allowed: true, Denied: true}
	type step struct {
		after   time.Duration
		want    decision
		err     bool
		reviews int
	}
	tests := []struct {
		name    string
		answers []any // a status or an error
		steps   []step
	}{
		{"allowed cached 5m", []any{allowed, noOpinion}, []step{{0, decisionAllow, false, 1}, {299 * time.Second, decisionAllow, false, 1}, {time.Second, decisionNoOpinion, false, 2}}},
		{"no opinion cached 30s", []any{noOpinion, allowed}, []step{{0, decisionNoOpinion, false, 1}, {29 * time.Second, decisionNoOpinion, false, 1}, {time.Second, decisionAllow, false, 2}}},
		{"denied cached 30s", []any{denied, allowed}, []step{{0, decisionDeny, false, 1}, {10 * time.Second, decisionDeny, false, 1}, {20 * time.Second, decisionAllow, false, 2}}},
		{"error not cached", []any{errors.New("refused"), allowed}, []step{{0, decisionNoOpinion, true, 1}, {0, decisionAllow, false, 2}}},
		{"throttled retried", []any{apierrors.NewTooManyRequests("slow down", 0), allowed}, []step{{0, decisionAllow, false, 2}}},
		{"both allowed and denied", []any{both}, []step{{0, decisionDeny, true, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			reviews := 0
			z := newSARAuthorizer(func(_ context.Context, r *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error) {
				if !reflect.DeepEqual(r.Spec, wantSpec) {
					t.Errorf("review of %+v\nwant %+v", r.Spec, wantSpec)
				}
				a := tt.answers[reviews]
				reviews++
				if err, ok := a.(error); ok {
					return nil, err
				}
				return &authorizationv1.SubjectAccessReview{Status: a.(authorizationv1.SubjectAccessReviewStatus)}, nil
			}, clock.now)
			z.backoff = fastBackoff
			for i, st := range tt.steps {
				clock.step(st.after)
				d, _, err := z.authorize(context.Background(), attrs)
				if d != st.want || (err != nil) != st.err || reviews != st.reviews {
					t.Fatalf("step %d: decision %v err %v after %d reviews; want %v err=%v after %d", i, d, err, reviews, st.want, st.err, st.reviews)
				}
			}
		})
	}
	t.Run("cache is per user and attributes", func(t *testing.T) {
		reviews := 0
		z := newSARAuthorizer(func(_ context.Context, r *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error) {
			reviews++
			return &authorizationv1.SubjectAccessReview{Status: authorizationv1.SubjectAccessReviewStatus{Allowed: r.Spec.User == "alice"}}, nil
		}, nil)
		bob := attrs
		bob.User = &userInfo{Name: "bob"}
		get := attrs
		get.Verb = "get"
		for _, c := range []struct {
			a    attributes
			want decision
		}{{attrs, decisionAllow}, {bob, decisionNoOpinion}, {get, decisionAllow}, {attrs, decisionAllow}, {bob, decisionNoOpinion}} {
			if d, _, _ := z.authorize(context.Background(), c.a); d != c.want {
				t.Errorf("%+v: %v, want %v", c.a, d, c.want)
			}
		}
		if reviews != 3 {
			t.Errorf("%d reviews, want 3", reviews)
		}
	})
}

func TestTTLCacheBounded(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	c := newTTLCache[int](clock.now)
	for i := range maxCacheEntries + 10 {
		c.set(fmt.Sprint(i), i, time.Minute)
	}
	if n := len(c.entries); n > maxCacheEntries {
		t.Errorf("%d entries", n)
	}
	if v, ok := c.get(fmt.Sprint(maxCacheEntries + 9)); !ok || v != maxCacheEntries+9 {
		t.Errorf("newest entry lost")
	}
	clock.step(time.Minute)
	if _, ok := c.get(fmt.Sprint(maxCacheEntries + 9)); ok {
		t.Errorf("entry outlived its TTL")
	}
}
