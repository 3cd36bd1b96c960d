package image

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Normalize turns a user's image reference into the full form peapod
// records: "busybox" -> "docker.io/library/busybox:latest",
// "x@sha256:<hex>" -> "docker.io/library/x@sha256:<hex>" (a tag next to a
// digest is dropped: the digest decides).
func Normalize(ref string) (string, error) {
	repo, tagOrDigest, err := splitRef(ref)
	if err != nil {
		return "", err
	}
	return repo + tagOrDigest, nil
}

// splitRef returns the normalised repository ("docker.io/library/busybox")
// and ":tag" or "@sha256:<hex>".
func splitRef(ref string) (string, string, error) {
	if ref == "" {
		return "", "", fmt.Errorf("invalid image reference %q: empty", ref)
	}
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return "", "", fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	switch t := r.(type) {
	case name.Digest:
		return repo, "@" + t.DigestStr(), nil
	case name.Tag:
		return repo, ":" + t.TagStr(), nil
	}
	return "", "", fmt.Errorf("invalid image reference %q", ref)
}

// endpoint is one place to pull a normalised reference from.
type endpoint struct {
	ref  name.Reference
	host string // for logs
}

func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// endpoints lists where to pull named from: the mirrors of its registry in
// order, or (only when the registry has no mirror list) the registry itself.
func (s *Service) endpoints(named string) ([]endpoint, error) {
	repo, suffix, err := splitRef(named)
	if err != nil {
		return nil, err
	}
	host, path, _ := strings.Cut(repo, "/")
	mirrors := s.o.Mirrors[host]
	if len(mirrors) == 0 && host == "docker.io" {
		mirrors = s.o.Mirrors[name.DefaultRegistry]
	}
	if len(mirrors) == 0 {
		var opts []name.Option
		if isLoopback(host) || slices.Contains(s.o.Insecure, host) {
			opts = append(opts, name.Insecure)
		}
		r, err := name.ParseReference(named, opts...)
		if err != nil {
			return nil, fmt.Errorf("invalid image reference %q: %w", named, err)
		}
		return []endpoint{{ref: r, host: host}}, nil
	}
	var eps []endpoint
	for _, m := range mirrors {
		if !strings.Contains(m, "://") {
			m = "https://" + m
		}
		u, err := url.Parse(m)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("mirror %q of %s: want http(s)://host[:port]", m, host)
		}
		if p := strings.Trim(u.Path, "/"); p != "" && p != "v2" {
			return nil, fmt.Errorf("mirror %q of %s: a path is not supported", m, host)
		}
		var opts []name.Option
		if u.Scheme == "http" || isLoopback(u.Host) || slices.Contains(s.o.Insecure, u.Host) {
			opts = append(opts, name.Insecure)
		}
		r, err := name.ParseReference(u.Host+"/"+path+suffix, opts...)
		if err != nil {
			return nil, fmt.Errorf("mirror %q of %s: %w", m, host, err)
		}
		eps = append(eps, endpoint{ref: r, host: u.Host})
	}
	return eps, nil
}
