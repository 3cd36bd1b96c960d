package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// curlOpts is the subset of curl's command line the Kubernetes e2e tests use
// (test/e2e/framework/network, the lifecycle-hook specs): upstream's agnhost
// image has Alpine's curl, ours has this.
type curlOpts struct {
	silent, showError, include, fail, follow, insecure bool
	output, writeOut, method                           string
	maxTime, connectTimeout                            time.Duration
	data, headers                                      []string
	url                                                string
}

// curl exit codes (curl(1), EXIT CODES).
const (
	curlOK          = 0
	curlUsage       = 2
	curlBadURL      = 3
	curlNoResolve   = 6
	curlNoConnect   = 7
	curlWriteError  = 23
	curlHTTPError   = 22
	curlTimeout     = 28
	curlOtherFailed = 56
)

// parseCurl reads curl's options wherever they appear (curl accepts options
// after the URL too), combined short flags ("-gqs") and short options with
// their value attached ("-o/dev/null") or in the next argument.
func parseCurl(args []string) (curlOpts, error) {
	o := curlOpts{connectTimeout: 300 * time.Second}
	// short option letter → long name; the ones that take a value are in takesValue.
	short := map[byte]string{
		'g': "globoff", 'q': "disable", 's': "silent", 'S': "show-error", 'i': "include",
		'f': "fail", 'L': "location", 'k': "insecure", 'I': "head", 'v': "verbose",
		'o': "output", 'w': "write-out", 'm': "max-time", 'X': "request", 'd': "data", 'H': "header",
	}
	takesValue := map[string]bool{"output": true, "write-out": true, "max-time": true, "connect-timeout": true,
		"request": true, "data": true, "header": true}
	set := func(name, val string) error {
		switch name {
		case "globoff", "disable", "verbose":
		case "silent":
			o.silent = true
		case "show-error":
			o.showError = true
		case "include":
			o.include = true
		case "fail":
			o.fail = true
		case "location":
			o.follow = true
		case "insecure":
			o.insecure = true
		case "head":
			o.method, o.include = http.MethodHead, true
		case "output":
			o.output = val
		case "write-out":
			o.writeOut = val
		case "request":
			o.method = val
		case "data":
			o.data = append(o.data, val)
		case "header":
			o.headers = append(o.headers, val)
		case "max-time", "connect-timeout":
			secs, err := strconv.ParseFloat(val, 64)
			if err != nil || secs < 0 {
				return fmt.Errorf("option --%s: expected a proper numerical parameter", name)
			}
			d := time.Duration(secs * float64(time.Second))
			if name == "max-time" {
				o.maxTime = d
			} else {
				o.connectTimeout = d
			}
		default:
			return fmt.Errorf("option --%s: is unknown", name)
		}
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--") && len(a) > 2:
			name := a[2:]
			val := ""
			if takesValue[name] {
				if i+1 >= len(args) {
					return o, fmt.Errorf("option %s: requires parameter", a)
				}
				i++
				val = args[i]
			}
			if err := set(name, val); err != nil {
				return o, err
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				name, ok := short[a[j]]
				if !ok {
					return o, fmt.Errorf("option -%c: is unknown", a[j])
				}
				val := ""
				if takesValue[name] {
					if j+1 < len(a) {
						val = a[j+1:]
					} else if i+1 < len(args) {
						i++
						val = args[i]
					} else {
						return o, fmt.Errorf("option -%c: requires parameter", a[j])
					}
					if err := set(name, val); err != nil {
						return o, err
					}
					break
				}
				if err := set(name, ""); err != nil {
					return o, err
				}
			}
		default:
			if o.url != "" {
				return o, fmt.Errorf("only one URL is supported (got %q and %q)", o.url, a)
			}
			o.url = a
		}
	}
	if o.url == "" {
		return o, errors.New("no URL specified")
	}
	if !strings.Contains(o.url, "://") {
		o.url = "http://" + o.url
	}
	if o.method == "" {
		o.method = http.MethodGet
		if len(o.data) > 0 {
			o.method = http.MethodPost
		}
	}
	return o, nil
}

// curl runs one request as curl would and returns its exit code.
func curl(args []string, stdout, stderr io.Writer) int {
	o, err := parseCurl(args)
	if err != nil {
		fmt.Fprintf(stderr, "curl: %v\n", err)
		return curlUsage
	}
	code, status, err := o.run(stdout)
	if o.writeOut != "" {
		fmt.Fprint(stdout, expandWriteOut(o.writeOut, status))
	}
	if err != nil && (!o.silent || o.showError) {
		fmt.Fprintf(stderr, "curl: (%d) %v\n", code, err)
	}
	return code
}

func (o curlOpts) run(stdout io.Writer) (code, status int, err error) {
	u, err := url.Parse(o.url)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return curlBadURL, 0, fmt.Errorf("URL using bad/illegal format or missing URL: %s", o.url)
	}
	var body io.Reader
	if len(o.data) > 0 {
		body = strings.NewReader(strings.Join(o.data, "&"))
	}
	req, err := http.NewRequest(o.method, u.String(), body)
	if err != nil {
		return curlBadURL, 0, err
	}
	req.Header.Set("User-Agent", "curl/7.88.1")
	req.Header.Set("Accept", "*/*")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, ":")
		if ok {
			req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	client := &http.Client{
		Timeout: o.maxTime,
		Transport: &http.Transport{
			Proxy:             nil, // test traffic goes where the test says, never through a proxy
			DialContext:       (&net.Dialer{Timeout: o.connectTimeout}).DialContext,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: o.insecure},
			DisableKeepAlives: true,
		},
	}
	if !o.follow {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	resp, err := client.Do(req)
	if err != nil {
		return classify(err), 0, err
	}
	defer resp.Body.Close()
	if o.fail && resp.StatusCode >= 400 {
		return curlHTTPError, resp.StatusCode, fmt.Errorf("The requested URL returned error: %d", resp.StatusCode)
	}
	out := stdout
	if o.output != "" {
		f, err := os.Create(o.output)
		if err != nil {
			return curlWriteError, resp.StatusCode, err
		}
		defer f.Close()
		out = f
	}
	if o.include {
		fmt.Fprintf(out, "%s %s\r\n", resp.Proto, resp.Status)
		_ = resp.Header.Write(out)
		fmt.Fprint(out, "\r\n")
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return classify(err), resp.StatusCode, err
	}
	return curlOK, resp.StatusCode, nil
}

// classify maps a Go network error to curl's exit code.
func classify(err error) int {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &dnsErr):
		return curlNoResolve
	case errors.As(err, &opErr) && opErr.Op == "dial":
		if opErr.Timeout() {
			return curlTimeout
		}
		return curlNoConnect
	case errors.As(err, &ne) && ne.Timeout():
		return curlTimeout
	}
	return curlOtherFailed
}

// expandWriteOut expands -w's variables: %{http_code} and %{response_code}
// (three digits, "000" without a response), \n, \t and %%.
func expandWriteOut(f string, status int) string {
	code := fmt.Sprintf("%03d", status)
	r := strings.NewReplacer(`%{http_code}`, code, `%{response_code}`, code, `\n`, "\n", `\t`, "\t", `%%`, "%")
	return r.Replace(f)
}
