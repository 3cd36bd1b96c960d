package stats

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parsers of the few kernel files the node's figures come from. Each takes
// the file's bytes, so tests feed them fixtures. They are hand-written, not
// github.com/prometheus/procfs: we need four fields of /proc/stat, a handful
// of /proc/meminfo and the counters of /proc/net/dev, and procfs parses the
// whole of each file into float seconds on every scrape.

// userHZ is the unit of /proc/stat's CPU columns. The kernel exports
// USER_HZ = 100 to user space on every architecture Go's linux ports run on
// (sysconf(_SC_CLK_TCK)); cAdvisor and procfs assume the same.
const userHZ = 100

// procStat is what the node summary takes from /proc/stat.
type procStat struct {
	// CPUNanos is the CPU time the node's tasks consumed: user + nice +
	// system + irq + softirq of the aggregate "cpu" line (guest time is
	// already inside user and nice; idle, iowait and steal are not
	// consumed by this node).
	CPUNanos uint64
	HaveCPU  bool
	// BootTime is the btime line.
	BootTime time.Time
}

// parseProcStat reads the aggregate "cpu" line and btime of /proc/stat.
func parseProcStat(data []byte) (procStat, error) {
	var st procStat
	haveBoot := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "cpu":
			// cpu user nice system idle iowait irq softirq steal guest guest_nice
			if len(f) < 8 {
				return st, fmt.Errorf("/proc/stat: short cpu line %q", sc.Text())
			}
			var ticks uint64
			for _, i := range []int{1, 2, 3, 6, 7} {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return st, fmt.Errorf("/proc/stat: cpu column %d: %w", i, err)
				}
				ticks += v
			}
			st.CPUNanos = ticks * uint64(time.Second/userHZ)
			st.HaveCPU = true
		case "btime":
			if len(f) < 2 {
				return st, fmt.Errorf("/proc/stat: short btime line")
			}
			sec, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return st, fmt.Errorf("/proc/stat: btime: %w", err)
			}
			st.BootTime, haveBoot = time.Unix(sec, 0), true
		}
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	if !st.HaveCPU {
		return st, fmt.Errorf("/proc/stat: no cpu line")
	}
	if !haveBoot {
		return st, fmt.Errorf("/proc/stat: no btime line")
	}
	return st, nil
}

// parseFlatKeyed reads a "key value" file (memory.stat).
func parseFlatKeyed(data []byte) map[string]uint64 {
	out := map[string]uint64{}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			out[f[0]] = v
		}
	}
	return out
}

// netDev is one interface line of /proc/net/dev.
type netDev struct {
	Name                                  string
	RxBytes, RxPackets, RxErrors, RxDrops uint64
	TxBytes, TxPackets, TxErrors, TxDrops uint64
}

// parseNetDev reads /proc/net/dev: two header lines, then
// "name: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed multicast
// tx_bytes tx_packets tx_errs tx_drop fifo colls carrier compressed".
func parseNetDev(data []byte) ([]netDev, error) {
	var out []netDev
	for line := range strings.Lines(string(data)) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.Contains(name, "|") {
			continue // a header line
		}
		f := strings.Fields(rest)
		if len(f) < 12 {
			return nil, fmt.Errorf("/proc/net/dev: short line for %q", strings.TrimSpace(name))
		}
		var v [12]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev: %s column %d: %w", strings.TrimSpace(name), i, err)
			}
			v[i] = n
		}
		out = append(out, netDev{
			Name:    strings.TrimSpace(name),
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDrops: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDrops: v[11],
		})
	}
	return out, nil
}

// parseLoadavgTasks returns the number of tasks (threads) alive, the
// denominator of /proc/loadavg's fourth field ("1.36 3.49 4.53 2/3518
// 3715089"), as the kubelet's pidlimit reads it.
func parseLoadavgTasks(data []byte) (int64, error) {
	f := strings.Fields(string(data))
	if len(f) < 5 {
		return 0, fmt.Errorf("/proc/loadavg: %d fields, want 5", len(f))
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, fmt.Errorf("/proc/loadavg: bad field %q", f[3])
	}
	return strconv.ParseInt(total, 10, 64)
}

// parseUint reads a file holding one unsigned integer (memory.usage_in_bytes).
func parseUint(data []byte) (uint64, error) {
	return strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
}
