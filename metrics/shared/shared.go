// Package shared registers collectors that several instances of a package
// may share on one registry (two image services, agents or probe managers
// in one test binary, or one daemon). It imports nothing of peapod, so any
// package can use it.
package shared

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c, or returns the collector of the same type already
// registered under the same description. Any other failure (a conflicting
// definition) is returned with c.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// MustRegister is Register for definitions fixed in code, where a conflict
// is a programming error.
func MustRegister[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	c, err := Register(reg, c)
	if err != nil {
		panic(err)
	}
	return c
}
