package kubeletapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// tlsSource is the server's TLS configuration. The serving certificate and
// the client CA are files read again when they change on disk, so rotated
// certificates take effect without a restart (the kubelet watches its
// files too); with no serving certificate configured, a self-signed one
// made at start serves instead.
type tlsSource struct {
	certFile, keyFile, caFile string
	selfSigned                *tls.Certificate

	mu    sync.Mutex
	stamp string // what the files looked like when cfg was built
	cfg   *tls.Config
}

func newTLSSource(o Options) (*tlsSource, error) {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("kubeletapi: CertFile and KeyFile go together: set both or neither")
	}
	t := &tlsSource{certFile: o.CertFile, keyFile: o.KeyFile, caFile: o.ClientCAFile}
	if o.CertFile == "" {
		c, err := selfSignedCert(o.NodeName, o.NodeIPs)
		if err != nil {
			return nil, err
		}
		t.selfSigned = c
		klog.InfoS("No serving certificate for the kubelet API configured: serving a self-signed one made in memory; clients must skip verification or trust it",
			"node", o.NodeName, "ips", o.NodeIPs)
	}
	stamp, err := t.fileStamp()
	if err != nil {
		return nil, err
	}
	cfg, err := t.build()
	if err != nil {
		return nil, err
	}
	t.stamp, t.cfg = stamp, cfg
	return t, nil
}

// selfSignedCert is what the kubelet makes when given no certificate: a
// CA and a serving certificate it signs, for the node's name and IPs.
func selfSignedCert(nodeName string, nodeIPs []string) (*tls.Certificate, error) {
	var ips []net.IP
	for _, s := range nodeIPs {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		}
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(nodeName, ips, nil)
	if err != nil {
		return nil, fmt.Errorf("kubeletapi: self-signed certificate: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("kubeletapi: self-signed certificate: %w", err)
	}
	return &c, nil
}

// serverConfig is the http.Server's TLS configuration.
func (t *tlsSource) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: t.forClient,
	}
}

// forClient is the configuration for one handshake: the current one,
// rebuilt first when a file changed. A file that cannot be read keeps the
// previous configuration serving.
func (t *tlsSource) forClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	stamp, err := t.fileStamp()
	if err != nil || stamp == t.stamp {
		return t.cfg, nil
	}
	cfg, err := t.build()
	if err != nil {
		klog.ErrorS(err, "Reloading the kubelet API's certificates failed; serving the previous ones")
	} else {
		klog.InfoS("Reloaded the kubelet API's certificates", "cert", t.certFile, "clientCA", t.caFile)
		t.cfg = cfg
	}
	t.stamp = stamp // one log line per change, not per handshake
	return t.cfg, nil
}

// fileStamp sums up the files' sizes and modification times.
func (t *tlsSource) fileStamp() (string, error) {
	var b strings.Builder
	for _, f := range []string{t.certFile, t.keyFile, t.caFile} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("kubeletapi: %w", err)
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (t *tlsSource) build() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		ClientAuth: tls.NoClientCert,
	}
	if t.selfSigned != nil {
		cfg.Certificates = []tls.Certificate{*t.selfSigned}
	} else {
		c, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
		if err != nil {
			return nil, fmt.Errorf("kubeletapi: serving certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	if t.caFile != "" {
		pem, err := os.ReadFile(t.caFile)
		if err != nil {
			return nil, fmt.Errorf("kubeletapi: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kubeletapi: client CA %s: no certificates in it", t.caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}
