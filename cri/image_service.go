package cri

import (
	"context"

	"peapod/image"
)

// Images is the image store seam (peapod/image).
type Images interface {
	Pull(ctx context.Context, ref string, auth *image.Auth) (*image.Image, error)
	Get(ref string) (*image.Image, error)
	List() []*image.Image
	Remove(ctx context.Context, ref string) error
	FsUsage() (image.FsUsage, error)
}
