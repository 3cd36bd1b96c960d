// Package freeport picks TCP ports on 127.0.0.1 for the test harnesses'
// daemons (API servers, etcd, registries), which bind them later.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// min is the lowest port handed out: well above the registered services
// a test machine may run.
const min = 10000

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Get returns a port free on 127.0.0.1 now, below the kernel's ephemeral
// range. A port the kernel hands out for ":0" lies in that range, where
// any outgoing connection (kubectl to an API server, a component to etcd)
// may take it as its local port between this check and the daemon's bind:
// seen as "bind: address already in use" with three test clusters
// starting at once. A port is never handed out twice by one process.
func Get() (int, error) {
	hi := ephemeralLow()
	mu.Lock()
	defer mu.Unlock()
	for range 500 {
		p := min + rand.IntN(hi-min)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		given[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free port in [%d, %d)", min, hi)
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo < min+1000 {
		return 32768
	}
	return lo
}
