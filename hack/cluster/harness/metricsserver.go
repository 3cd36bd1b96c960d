package harness

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// metrics-server (sigs.k8s.io/metrics-server, Options.MetricsServer) as
// one more host process of the cluster, the way its components.yaml runs
// it in a pod, adapted to a process outside the cluster:
//
//	kubectl top ─▶ kube-apiserver ──(aggregator: front-proxy-client cert,
//	                     │            X-Remote-User/Group)──▶ metrics-server
//	                     │                                   NodeIP:Ports.MetricsServer
//	APIService v1beta1.metrics.k8s.io ─▶ Service kube-system/metrics-server
//	(caBundle: the cluster CA)             (no selector) ─▶ EndpointSlice NodeIP:port
//
//	metrics-server ──(client cert CN=metrics-server)──▶ node's kubelet API
//	                 every 15 s: GET https://<InternalIP>:<node status port>/metrics/resource
//
// It listens on the node IP, not on loopback: the API server reaches it
// through an EndpointSlice, which refuses loopback addresses. Its identity
// is a client certificate of the cluster CA for the user "metrics-server"
// (metrics-server.kubeconfig), bound to the roles components.yaml binds
// to its service account: system:metrics-server (nodes/metrics, and
// pods and nodes to list), system:auth-delegator (TokenReviews and
// SubjectAccessReviews for the requests it serves) and, in kube-system,
// extension-apiserver-authentication-reader (the front-proxy settings).
// The same certificate authenticates it to the kubelet API, which asks the
// API server whether metrics-server may get nodes/metrics.

// frontProxyClient is the CN of the aggregator's client certificate, the
// one name --requestheader-allowed-names lets assert X-Remote-* headers.
const frontProxyClient = "front-proxy-client"

// metricsServerUser is metrics-server's user name (its client
// certificate's CN), the subject of its RBAC bindings.
const metricsServerUser = "metrics-server"

// makeMetricsServerPKI issues metrics-server's serving certificate (for
// the name the aggregator dials, <service>.<namespace>.svc, and the node
// IP) and its client certificate, and writes its kubeconfig.
func (c *Cluster) makeMetricsServerPKI(ca *certAuthority, dir string) error {
	for _, s := range []certSpec{
		{name: "metrics-server-serving", cn: "metrics-server", server: true,
			dns: []string{"metrics-server.kube-system.svc", "metrics-server.kube-system.svc.cluster.local", "metrics-server"},
			ips: []net.IP{net.ParseIP(c.NodeIP)}},
		{name: "metrics-server-client", cn: metricsServerUser, client: true},
	} {
		if err := ca.issue(dir, s); err != nil {
			return err
		}
	}
	kc := kubeconfig(c.apiURL(), c.pki("ca.crt"), c.pki("metrics-server-client.crt"), c.pki("metrics-server-client.key"), metricsServerUser)
	return os.WriteFile(c.metricsServerKubeconfig(), []byte(kc), 0o600)
}

func (c *Cluster) metricsServerKubeconfig() string {
	return filepath.Join(c.Dir, "metrics-server.kubeconfig")
}

// metricsServerObjects renders the API objects metrics-server needs: the
// RBAC of its components.yaml (v0.9.0, manifests/base/rbac.yaml) with the
// user metricsServerUser in place of its service account, the Service
// without selector and its EndpointSlice (the node IP and metrics-server's
// port), and the APIService with the cluster CA as caBundle (components.yaml
// has insecureSkipTLSVerify instead).
func (c *Cluster) metricsServerObjects(caPEM []byte) string {
	return fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: ["metrics.k8s.io"]
  resources: ["pods", "nodes"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: metrics-server-auth-reader
  namespace: kube-system
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: extension-apiserver-authentication-reader
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
rules:
- apiGroups: [""]
  resources: ["nodes/metrics"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods", "nodes"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:metrics-server
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:metrics-server
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: %[1]s}
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {k8s-app: metrics-server}
spec:
  ports:
  - {name: https, port: 443, protocol: TCP, targetPort: %[3]d}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-host
  namespace: kube-system
  labels:
    kubernetes.io/service-name: metrics-server
    endpointslice.kubernetes.io/managed-by: hack-cluster.peapod
addressType: IPv4
ports:
- {name: https, port: %[3]d, protocol: TCP}
endpoints:
- addresses: [%[2]q]
  conditions: {ready: true}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
  labels: {k8s-app: metrics-server}
spec:
  service: {name: metrics-server, namespace: kube-system, port: 443}
  group: metrics.k8s.io
  version: v1beta1
  caBundle: %[4]s
  groupPriorityMinimum: 100
  versionPriority: 100
`, metricsServerUser, c.NodeIP, c.Ports.MetricsServer, base64.StdEncoding.EncodeToString(caPEM))
}

// metricsServerArgs are components.yaml's arguments (secure port,
// --kubelet-use-node-status-port, --metric-resolution=15s) with what a
// process outside the cluster needs: its kubeconfig for the API server
// and for delegated authn/authz, its serving certificate, the node IP to
// listen on, the cluster CA for the kubelet's serving certificate (no
// --kubelet-insecure-tls) and its client certificate for the kubelet.
func (c *Cluster) metricsServerArgs() []string {
	kc := c.metricsServerKubeconfig()
	return []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=" + c.NodeIP, "--secure-port=" + strconv.Itoa(c.Ports.MetricsServer),
		"--tls-cert-file=" + c.pki("metrics-server-serving.crt"),
		"--tls-private-key-file=" + c.pki("metrics-server-serving.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-use-node-status-port",
		"--kubelet-certificate-authority=" + c.pki("ca.crt"),
		"--kubelet-client-certificate=" + c.pki("metrics-server-client.crt"),
		"--kubelet-client-key=" + c.pki("metrics-server-client.key"),
		"--metric-resolution=15s",
	}
}

// startMetricsServer applies its objects, starts it and waits until the
// API server answers GET /apis/metrics.k8s.io/v1beta1/nodes through it
// (possibly with no items yet: a node's first metrics need two scrapes,
// 15 s apart).
func (c *Cluster) startMetricsServer(ctx context.Context) error {
	caPEM, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return err
	}
	cmd := c.KubectlCmd(ctx, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(c.metricsServerObjects(caPEM))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply (metrics-server's RBAC, Service, EndpointSlice, APIService): %w: %s", err, out)
	}
	comp, err := c.start("metrics-server", c.opts.MetricsServer, c.metricsServerArgs(), nil)
	if err != nil {
		return err
	}
	const timeout = 90 * time.Second
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if !comp.alive() {
			return fmt.Errorf("metrics-server exited; its log ends:\n%s", tail(comp.Log, 20))
		}
		_, err := c.kubectl(ctx, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
		if err == nil {
			return nil
		}
		last = err.Error()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	status, _ := c.kubectl(ctx, "get", "apiservice", "v1beta1.metrics.k8s.io", "-o", `jsonpath={.status.conditions[?(@.type=="Available")]}`)
	return fmt.Errorf("no answer from /apis/metrics.k8s.io/v1beta1/nodes within %s (last: %s; APIService Available: %s); metrics-server's log ends:\n%s",
		timeout, last, status, tail(comp.Log, 20))
}
