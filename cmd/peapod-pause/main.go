// Command peapod-pause is the infra process of every pod sandbox. It is a
// separate, dependency-free static binary so that its footprint per pod stays
// near the ~2 MB floor of a Go program (NOTES.md); `peapod pause` runs the
// same code from the main binary when this one is not installed.
package main

import (
	"os"

	"peapod/sandbox/pause"
)

func main() { os.Exit(pause.Run(os.Args[1:])) }
