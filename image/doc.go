// Package image is peapod's image service: it pulls images with
// go-containerregistry, keeps their blobs in a content-addressed store,
// unpacks each layer once into an overlay-ready snapshot, and tracks which
// names (RepoTags, RepoDigests) point at which image.
//
// On disk, under Options.Root:
//
//	blobs/sha256/<hex>           compressed layers, configs, manifests (digest verified)
//	snapshots/<chainid-hex>/fs   one unpacked layer, usable as an overlay lowerdir
//	tmp/                         work in progress; emptied by New
//	volumes/<image hex>          an image mounted read-only for containers (volume.go)
//	volume-empty/                the empty bottom lower of a one-layer image's volume
//
// Life of the objects (every arrow is one rename, so a crash at any point
// leaves either the old or the new state, never half of one):
//
//	blob:     absent ──download+verify digest──▶ tmp/blob-* ──rename──▶ blobs/sha256/<hex>
//	snapshot: absent ──unpack+verify diffID────▶ tmp/snap-* ──rename──▶ snapshots/<chain>
//	image:    all blobs+snapshots committed ──store.Put──▶ VISIBLE ──Remove / lost last name──▶ gone
//	GC:       a blob or snapshot lives while an image record, a holder
//	          (Acquire/Release, image volumes included) or an in-flight
//	          pull/import (lease) refers to it. A pull or import that fails
//	          collects at once what it stored and nothing else refers to.
//
// A pull runs in two phases. DOWNLOAD fetches the manifest, the config and
// every layer blob fully into the blob store; the stall detector only runs
// here. UNPACK then turns the verified blobs into snapshots; it never talks
// to the network and is never cancelled for lack of progress.
//
// Stall rule: a pull makes progress when at least max(1 KiB, 1 KiB per
// second of StallTimeout) of blob bytes arrive within StallTimeout (60 KiB
// per minute with the default). A pull that falls below that rate for a
// whole StallTimeout window fails with "pull of X stalled: no progress for
// 1m0s". A trickle of bytes does not keep a pull alive.
//
// Layer safety: entries are written with openat2(RESOLVE_IN_ROOT) relative
// to the snapshot directory, so symlinks (including ones planted by the same
// layer) resolve inside the snapshot and never outside it. Entries with ".."
// components or absolute names, hardlinks whose target is absolute or has
// "..", and character/block devices are refused. FIFOs are allowed (as in
// Docker and containerd; they grant no device access), so callers reading
// image files (e.g. /etc/passwd) must check for regular files before
// reading. Extended attributes in the trusted.overlay.* namespace are
// dropped so a layer cannot forge overlay markers.
//
// Archive safety (Import): links between archive entries are resolved by
// name inside the archive and materialised as hardlinks to extracted
// files; no symlink is ever created, nothing outside the extraction dir
// is read or written (archive_read.go).
package image
