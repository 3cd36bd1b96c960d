package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func regEnt(name, body string) tent { return tent{hdr: tar.Header{Name: name}, body: body} }
func symEnt(name, target string) tent {
	return tent{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}
func hardEnt(name, target string) tent {
	return tent{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}
func dirEnt(name string) tent { return tent{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir}} }

// dockerManifestJSON is a docker-save manifest.json naming layerPath.
func (a *craftedImage) dockerManifestJSON(t testing.TB, configPath, layerPath string) string {
	return string(must[[]byte](t)(json.Marshal([]dockerManifest{{Config: configPath,
		RepoTags: []string{"docker.io/library/busybox:latest"}, Layers: []string{layerPath}}})))
}

func (a *craftedImage) indexJSON(t testing.TB, name string) string {
	return string(must[[]byte](t)(json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Digest: a.manD, Size: int64(len(a.manifest)),
		Annotations: map[string]string{annotationRefName: name}}}})))
}

// ociLayout is the entries of an OCI layout of a under prefix.
func (a *craftedImage) ociLayout(t testing.TB, prefix string) []tent {
	return []tent{
		regEnt(prefix+"oci-layout", `{"imageLayoutVersion":"1.0.0"}`),
		regEnt(prefix+"index.json", a.indexJSON(t, "busybox:latest")),
		regEnt(prefix+"blobs/sha256/"+a.manD.Hex, string(a.manifest)),
		regEnt(prefix+"blobs/sha256/"+a.configD.Hex, string(a.config)),
		regEnt(prefix+"blobs/sha256/"+a.layerD[0].Hex, string(a.layers[0])),
	}
}

// TestImportLinkedArchives: the archives real tools write, with their
// links between entries, import; each yields the same image.
func TestImportLinkedArchives(t *testing.T) {
	a := craftImage(t, nil, nil, "hi")
	legacy := strings.Repeat("1", 64) // a legacy layer id dir, as skopeo names it
	skopeo := func(t *testing.T, layerRef string, linkFirst bool, link tent) []tent {
		blob := regEnt(a.layerD[0].Hex+".tar", string(a.layers[0]))
		ents := []tent{regEnt(a.configD.Hex+".json", string(a.config))}
		if linkFirst {
			ents = append(ents, link, blob)
		} else {
			ents = append(ents, blob, link)
		}
		return append(ents,
			regEnt(legacy+"/VERSION", "1.0"),
			regEnt(legacy+"/json", `{}`),
			regEnt("manifest.json", a.dockerManifestJSON(t, a.configD.Hex+".json", layerRef)),
			regEnt("repositories", `{"docker.io/library/busybox":{"latest":"`+legacy+`"}}`))
	}
	for _, tc := range []struct {
		name string
		ents func(t *testing.T) []tent
	}{
		{"skopeo docker-archive: legacy layer.tar symlinked to the blob", func(t *testing.T) []tent {
			return skopeo(t, a.layerD[0].Hex+".tar", false, symEnt(legacy+"/layer.tar", "../"+a.layerD[0].Hex+".tar"))
		}},
		{"symlink before its target, manifest.json names the symlink", func(t *testing.T) []tent {
			return skopeo(t, legacy+"/layer.tar", true, symEnt(legacy+"/layer.tar", "../"+a.layerD[0].Hex+".tar"))
		}},
		{"hardlink to the blob, manifest.json names the hardlink", func(t *testing.T) []tent {
			return skopeo(t, legacy+"/layer.tar", false, hardEnt(legacy+"/layer.tar", "./"+a.layerD[0].Hex+".tar"))
		}},
		{"a chain: symlink to a hardlink to the blob", func(t *testing.T) []tent {
			ents := skopeo(t, legacy+"/layer.tar", false, hardEnt("other/layer.tar", a.layerD[0].Hex+".tar"))
			return append(ents, symEnt(legacy+"/layer.tar", "../other/./layer.tar"))
		}},
		{"docker 25 save: OCI layout, manifest.json and legacy symlinks into blobs/", func(t *testing.T) []tent {
			ents := append([]tent{dirEnt("blobs/"), dirEnt("blobs/sha256/")}, a.ociLayout(t, "")...)
			return append(ents,
				regEnt("manifest.json", a.dockerManifestJSON(t, "blobs/sha256/"+a.configD.Hex, "blobs/sha256/"+a.layerD[0].Hex)),
				symEnt(legacy+"/layer.tar", "../blobs/sha256/"+a.layerD[0].Hex))
		}},
		{"oci-archive as skopeo writes it", func(t *testing.T) []tent {
			return append([]tent{dirEnt("blobs/"), dirEnt("blobs/sha256/")}, a.ociLayout(t, "")...)
		}},
		{"OCI layout dir tarred from inside (./ names)", func(t *testing.T) []tent {
			return append([]tent{dirEnt("./"), dirEnt("./blobs/")}, a.ociLayout(t, "./")...)
		}},
		{"OCI layout dir tarred from its parent", func(t *testing.T) []tent {
			return append([]tent{dirEnt("busybox-oci/")}, a.ociLayout(t, "busybox-oci/")...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			imgs, err := e.svc.Import(ctxT(t), bytes.NewReader(tarBytes(t, tc.ents(t))))
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if len(imgs) != 1 || imgs[0].ID != a.configD.String() ||
				!slices.Equal(imgs[0].RepoTags, []string{"docker.io/library/busybox:latest"}) ||
				!slices.Equal(imgs[0].ChainIDs, []string{a.layerD[0].String()}) {
				t.Fatalf("imported %+v", imgs)
			}
			if n := dirNames(t, filepath.Join(e.root, "tmp")); len(n) != 0 {
				t.Errorf("tmp after import: %v", n)
			}
		})
	}
}

// TestImportHostileArchives: links that lead nowhere, outside the archive,
// into a loop or to a directory, and the other tricks, are each refused
// with an error naming the entry; nothing is left in the store, and
// nothing outside the extraction dir is touched.
func TestImportHostileArchives(t *testing.T) {
	a := craftImage(t, nil, nil, "hi")
	layout := func(extra ...tent) func(string) []tent {
		return func(string) []tent { return append(a.ociLayout(t, ""), extra...) }
	}
	for _, tc := range []struct {
		name string
		ents func(outside string) []tent
		want string
	}{
		{"symlink to a missing entry", layout(symEnt("x/layer.tar", "../nothere.tar")),
			`archive entry "x/layer.tar": link target "nothere.tar" is not in the archive`},
		{"symlink to ../etc/passwd", layout(symEnt("layer.tar", "../etc/passwd")),
			`archive entry "layer.tar": link target "../etc/passwd" leaves the archive`},
		{"symlink climbing out through a dir", layout(symEnt("blobs/sha256/x", "../../../../etc/passwd")),
			`archive entry "blobs/sha256/x": link target "../../../../etc/passwd" leaves the archive`},
		{"symlink to an absolute path", func(o string) []tent {
			return append(a.ociLayout(t, ""), symEnt("layer.tar", o+"/sentinel"))
		}, `archive entry "layer.tar": absolute link target`},
		{"hardlink to ../etc/passwd", layout(hardEnt("layer.tar", "../etc/passwd")),
			`archive entry "layer.tar": link target "../etc/passwd" leaves the archive`},
		{"hardlink to an absolute path", layout(hardEnt("layer.tar", "/etc/passwd")),
			`archive entry "layer.tar": absolute link target "/etc/passwd"`},
		{"hardlink cycle", layout(hardEnt("a", "b"), hardEnt("b", "a")),
			`archive entry "a": link cycle through "a"`},
		{"symlink to itself", layout(symEnt("loop", "./loop")),
			`archive entry "loop": link cycle through "loop"`},
		{"symlink cycle across dirs", layout(symEnt("d1/x", "../d2/y"), symEnt("d2/y", "../d1/x")),
			`archive entry "d1/x": link cycle through "d1/x"`},
		{"link to a directory", layout(symEnt("blobs-link", "blobs/sha256")),
			`archive entry "blobs-link": link target "blobs/sha256" is a directory`},
		{"symlink to the archive root", layout(symEnt("d/root", "..")),
			`archive entry "d/root": link target "." is a directory`},
		{"an entry through a link", layout(symEnt("x", "blobs"), regEnt("x/evil", "x")),
			`archive entry "x/evil": "x" is not a directory in the archive`},
		{"a name twice", layout(regEnt("blobs/sha256/"+a.layerD[0].Hex, "again")),
			`archive entry "blobs/sha256/` + a.layerD[0].Hex + `": the name appears twice`},
		{"a link named like a file", layout(symEnt("index.json", "oci-layout")),
			`archive entry "index.json": the name appears twice`},
		{"link without a target", layout(hardEnt("h", "")),
			`archive entry "h": link without a target`},
		{"a long chain", func(string) []tent {
			ents := a.ociLayout(t, "")
			for i := range 41 {
				ents = append(ents, symEnt("c"+strings.Repeat("x", i), "c"+strings.Repeat("x", i+1)))
			}
			return append(ents, regEnt("c"+strings.Repeat("x", 41), "end"))
		}, `archive entry "c": more than 40 links in a chain`},
		{"char device", layout(tent{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}),
			`archive entry "null": type '3' not supported`},
		{"fifo", layout(tent{hdr: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}}),
			`archive entry "fifo": type '6' not supported`},
		{"dotdot name", layout(regEnt("../escape", "x")), `archive entry "../escape" escapes the archive`},
		{"manifest not in the archive", func(string) []tent {
			return a.ociLayout(t, "")[:2]
		}, `busybox:latest (` + a.manD.String() + `): manifest ` + a.manD.String() + ` is not in the archive`},
		{"manifest blob not what index.json says", func(string) []tent {
			ents := a.ociLayout(t, "")
			ents[2].body = strings.Replace(ents[2].body, `"schemaVersion":2`, `"schemaVersion": 2`, 1)
			return ents
		}, `manifest ` + a.manD.String() + `: digest mismatch`},
		{"layer blob not what the manifest says", func(string) []tent {
			ents := a.ociLayout(t, "")
			ents[4].body = string(tarBytes(t, []tent{{hdr: tarHeader("hello"), body: "ho"}}))
			return ents
		}, `blob ` + a.layerD[0].String() + `: digest mismatch`},
		{"neither index.json nor manifest.json", func(string) []tent { return a.ociLayout(t, "")[2:] },
			"neither index.json (OCI layout) nor manifest.json (docker save) in the archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			outside := filepath.Join(t.TempDir(), "outside")
			os.Mkdir(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "sentinel"), []byte("untouched"), 0o644)
			_, err := e.svc.Import(ctxT(t), bytes.NewReader(tarBytes(t, tc.ents(outside))))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Import err = %v\nwant it to contain %q", err, tc.want)
			}
			if l := e.svc.List(); len(l) != 0 {
				t.Errorf("images after a refused import: %v", l)
			}
			for _, d := range []string{"tmp", "blobs/sha256", "snapshots"} {
				if n := dirNames(t, filepath.Join(e.root, d)); len(n) != 0 {
					t.Errorf("%s after a refused import: %v", d, n)
				}
			}
			if n := dirNames(t, outside); !slices.Equal(n, []string{"sentinel"}) {
				t.Errorf("outside dir now holds %v", n)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "sentinel")); string(b) != "untouched" {
				t.Errorf("sentinel now %q", b)
			}
		})
	}
}
