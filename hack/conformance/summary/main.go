// Command summary reads a ginkgo JUnit report (critest's or e2e.test's
// -ginkgo.junit-report) and
// prints passed / failed / skipped and, for each failed or skipped spec, its
// name and the first lines of the reason.
//
//	go run ./hack/conformance/summary [-v] [-label NAME] junit.xml
package main

import (
	"encoding/xml"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

type suites struct {
	Suites []suite `xml:"testsuite"`
}

type suite struct {
	Cases []tcase `xml:"testcase"`
}

type tcase struct {
	Name    string   `xml:"name,attr"`
	Status  string   `xml:"status,attr"`
	Time    float64  `xml:"time,attr"`
	Failure *message `xml:"failure"`
	Error   *message `xml:"error"`
	Skipped *message `xml:"skipped"`
}

type message struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

func main() {
	verbose := flag.Bool("v", false, "also list skipped specs with their reasons")
	label := flag.String("label", "critest", "the suite's name on the summary lines")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: summary [-v] junit.xml")
		os.Exit(2)
	}
	data, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var s suites
	if err := xml.Unmarshal(data, &s); err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	var passed, failed, skipped []tcase
	for _, su := range s.Suites {
		for _, c := range su.Cases {
			// Ginkgo reports its suite-level nodes as cases too.
			if strings.HasPrefix(c.Name, "[BeforeSuite]") || strings.HasPrefix(c.Name, "[AfterSuite]") || strings.HasPrefix(c.Name, "[SynchronizedBeforeSuite]") || strings.HasPrefix(c.Name, "[SynchronizedAfterSuite]") || strings.HasPrefix(c.Name, "[ReportAfterSuite]") || strings.HasPrefix(c.Name, "[ReportBeforeSuite]") {
				if c.Failure != nil || c.Error != nil {
					failed = append(failed, c)
				}
				continue
			}
			switch {
			case c.Failure != nil || c.Error != nil:
				failed = append(failed, c)
			case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
				skipped = append(skipped, c)
			default:
				passed = append(passed, c)
			}
		}
	}
	total := len(passed) + len(failed) + len(skipped)
	fmt.Printf("%s: %d specs\n", *label, total)
	sort.Slice(failed, func(i, j int) bool { return failed[i].Name < failed[j].Name })
	for _, c := range failed {
		m := c.Failure
		if m == nil {
			m = c.Error
		}
		fmt.Printf("FAIL %s\n     %s\n", c.Name, firstLines(m.Message+"\n"+m.Body, 3))
	}
	if *verbose {
		sort.Slice(skipped, func(i, j int) bool { return skipped[i].Name < skipped[j].Name })
		for _, c := range skipped {
			fmt.Printf("SKIP %s\n     %s\n", c.Name, firstLines(c.Skipped.Message, 1))
		}
	}
	// Last, in the plain "N passed, N failed" form CI reads.
	fmt.Printf("%s: %d passed, %d failed, %d skipped\n", *label, len(passed), len(failed), len(skipped))
	if len(failed) > 0 {
		os.Exit(1)
	}
}

func firstLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
		if len(out) == n {
			break
		}
	}
	return strings.Join(out, "\n     ")
}
