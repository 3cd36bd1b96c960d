package image

import (
	"bytes"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Checking a manifest and its config before anything is stored: both come
// from a registry or an archive, so every digest, size and count is input.
// Whatever passes names its blobs and snapshots only by sha256 digests
// (64 hex digits), so the store paths made from them stay in the store.

// manifest is a parsed image manifest and, once setConfig succeeds, its
// config.
type manifest struct {
	*v1.Manifest
	digest  v1.Hash // of the raw manifest
	config  *v1.ConfigFile
	diffIDs []v1.Hash
}

// parseManifest parses an image manifest and checks its descriptors: sha256
// digests, sizes not negative.
func parseManifest(raw []byte) (*manifest, error) {
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	if err := checkBlobDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("manifest %s: config: %w", d, err)
	}
	for _, l := range m.Layers {
		if err := checkBlobDescriptor(l); err != nil {
			return nil, fmt.Errorf("manifest %s: layer: %w", d, err)
		}
	}
	return &manifest{Manifest: m, digest: d}, nil
}

func checkBlobDescriptor(d v1.Descriptor) error {
	if err := checkSHA256(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("%s: negative size %d", d.Digest, d.Size)
	}
	return nil
}

// checkSHA256 accepts only sha256:<64 lowercase hex>: the only digests the
// store keeps, and the only ones its paths are made from.
func checkSHA256(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || !isHex(h.Hex) {
		return fmt.Errorf("digest %q: only sha256 digests are supported", h.String())
	}
	return nil
}

// setConfig checks raw is the config the manifest names (digest and size)
// and that it describes as many layers as the manifest has.
func (m *manifest) setConfig(raw []byte) error {
	cd, n, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if cd != m.Config.Digest {
		return fmt.Errorf("config digest mismatch: manifest %s says %s, got %s", m.digest, m.Config.Digest, cd)
	}
	if n != m.Config.Size {
		return fmt.Errorf("config %s: size mismatch: manifest %s says %d bytes, got %d", m.Config.Digest, m.digest, m.Config.Size, n)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("manifest %s has %d layers but config %s has %d diff ids",
			m.digest, len(m.Layers), m.Config.Digest, len(cfg.RootFS.DiffIDs))
	}
	for _, d := range cfg.RootFS.DiffIDs {
		if err := checkSHA256(d); err != nil {
			return fmt.Errorf("config %s: diff id: %w", m.Config.Digest, err)
		}
	}
	m.config, m.diffIDs = cfg, cfg.RootFS.DiffIDs
	return nil
}

// fill sets rec's id, manifest, size, layers and chain ids from m (after
// setConfig).
func (m *manifest) fill(rec *record) {
	rec.ID = m.Config.Digest.String()
	rec.Manifest = m.digest.String()
	rec.Size = uint64(m.Config.Size)
	rec.config = m.config
	rec.Layers, rec.ChainIDs = nil, nil
	var chain v1.Hash
	for i, l := range m.Layers {
		diffID := m.diffIDs[i]
		if i == 0 {
			chain = diffID
		} else {
			chain, _, _ = v1.SHA256(strings.NewReader(chain.String() + " " + diffID.String()))
		}
		rec.Layers = append(rec.Layers, layerRecord{Digest: l.Digest.String(), DiffID: diffID.String(), Size: l.Size, MediaType: string(l.MediaType)})
		rec.ChainIDs = append(rec.ChainIDs, chain.String())
		rec.Size += uint64(l.Size)
	}
}

// selectPlatform picks the first entry of index d (im) for platform p, as
// go-containerregistry does; entries without a platform never match.
func selectPlatform(im *v1.IndexManifest, d v1.Hash, p v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, c := range im.Manifests {
		if c.Platform == nil {
			continue
		}
		if c.Platform.Satisfies(p) {
			if err := checkSHA256(c.Digest); err != nil {
				return v1.Descriptor{}, fmt.Errorf("index %s: entry for %s: %w", d, c.Platform, err)
			}
			return c, nil
		}
		have = append(have, c.Platform.String())
	}
	if len(have) == 0 {
		return v1.Descriptor{}, fmt.Errorf("index %s has no image for platform %s (no entry names a platform)", d, p.String())
	}
	return v1.Descriptor{}, fmt.Errorf("index %s has no image for platform %s (it has %s)", d, p.String(), strings.Join(have, ", "))
}
