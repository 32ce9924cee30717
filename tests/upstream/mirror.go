package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// mirror serves images under their upstream names (ghcr.io/...) to one
// process without the internet: a TLS registry (go-containerregistry's
// pkg/registry, in memory) whose certificate names the upstream hosts,
// reached through a CONNECT proxy on loopback. The process is pointed at
// the proxy with HTTPS_PROXY and made to trust the certificate with
// SSL_CERT_FILE (env); nothing else on the machine changes. The proxy
// refuses every host it does not mirror, so no request leaves the machine
// and a missing image fails fast, with the host in refused.
type mirror struct {
	hosts    map[string]bool // upstream hosts served, e.g. "ghcr.io"
	caPath   string          // PEM of the registry's self-signed certificate
	registry *httptest.Server
	proxyLn  net.Listener
	proxy    *http.Server

	wg sync.WaitGroup // the proxy's tunnel goroutines; Close waits

	mu      sync.Mutex
	conns   map[net.Conn]struct{} // hijacked tunnel ends, closed by Close; guarded by mu
	refused []string              // CONNECT targets refused; guarded by mu
}

// startMirror serves the image in the OCI archive under each name in refs
// (fully qualified: host/repository:tag). It writes the certificate to
// caPath and logs requests to logw.
func startMirror(archive []byte, refs []string, caPath string, logw io.Writer) (*mirror, error) {
	blobs, manifest, err := readArchive(archive)
	if err != nil {
		return nil, err
	}
	m := &mirror{hosts: map[string]bool{}, caPath: caPath, conns: map[net.Conn]struct{}{}}
	handler := registry.New(registry.WithBlobHandler(blobs),
		registry.Logger(log.New(logw, "registry: ", log.LstdFlags)))
	for _, ref := range refs {
		host, repo, tag, err := splitRef(ref)
		if err != nil {
			return nil, err
		}
		m.hosts[host] = true
		if err := putManifest(handler, repo, tag, manifest, blobs); err != nil {
			return nil, fmt.Errorf("mirror %s: %w", ref, err)
		}
	}

	cert, certPEM, err := selfSigned(m.hostList())
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(caPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	m.registry = httptest.NewUnstartedServer(handler)
	m.registry.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	m.registry.Config.ErrorLog = log.New(logw, "registry: ", log.LstdFlags)
	m.registry.StartTLS()

	if m.proxyLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		m.registry.Close()
		return nil, err
	}
	m.proxy = &http.Server{
		Handler:  http.HandlerFunc(m.connect),
		ErrorLog: log.New(logw, "proxy: ", log.LstdFlags),
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_ = m.proxy.Serve(m.proxyLn) // ends with ErrServerClosed on Close
	}()
	return m, nil
}

// env is what a process needs to pull through the mirror.
func (m *mirror) env() []string {
	proxy := "http://" + m.proxyLn.Addr().String()
	return []string{"HTTPS_PROXY=" + proxy, "https_proxy=" + proxy, "SSL_CERT_FILE=" + m.caPath}
}

// Refused returns the CONNECT targets the proxy turned away.
func (m *mirror) Refused() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.refused...)
}

// Close stops the proxy and the registry and waits for every tunnel.
func (m *mirror) Close() {
	_ = m.proxy.Close()
	m.mu.Lock()
	for c := range m.conns {
		_ = c.Close()
	}
	m.conns = nil // track refuses from now on
	m.mu.Unlock()
	m.wg.Wait()
	m.registry.Close()
}

func (m *mirror) hostList() []string {
	var hosts []string
	for h := range m.hosts {
		hosts = append(hosts, h)
	}
	return hosts
}

// connect tunnels a CONNECT to a mirrored host's port 443 to the registry.
func (m *mirror) connect(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if r.Method != http.MethodConnect || err != nil || port != "443" || !m.hosts[host] {
		m.mu.Lock()
		m.refused = append(m.refused, r.Method+" "+r.Host)
		m.mu.Unlock()
		http.Error(w, fmt.Sprintf("%s %s: not mirrored here (only CONNECT to %v port 443)", r.Method, r.Host, m.hostList()), http.StatusForbidden)
		return
	}
	upstream, err := net.Dial("tcp", m.registry.Listener.Addr().String())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = client.Close()
		_ = upstream.Close()
		return
	}
	if !m.track(client, upstream) {
		return
	}
	defer m.untrack(client, upstream)
	// Both directions; each ends when its source closes (or Close closes
	// both ends) and then closes its destination, which ends the other.
	// track has added both to m.wg.
	var done sync.WaitGroup
	done.Add(2)
	go func() {
		defer m.wg.Done()
		defer done.Done()
		_, _ = io.Copy(upstream, buf.Reader) // buf holds what the client sent after CONNECT
		_ = upstream.Close()
	}()
	go func() {
		defer m.wg.Done()
		defer done.Done()
		_, _ = io.Copy(client, upstream)
		_ = client.Close()
	}()
	done.Wait()
}

// track records a tunnel's two ends for Close and adds its two copy
// goroutines to m.wg, under mu, so an Add never races Close's Wait; when
// the mirror is closing it closes the ends instead and returns false.
func (m *mirror) track(conns ...net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns == nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		m.conns[c] = struct{}{}
	}
	m.wg.Add(2)
	return true
}

func (m *mirror) untrack(conns ...net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(m.conns, c) // a no-op on the nil map after Close
	}
}

// splitRef splits "host/repository:tag".
func splitRef(ref string) (host, repo, tag string, err error) {
	host, rest, ok := strings.Cut(ref, "/")
	if !ok || !strings.Contains(host, ".") {
		return "", "", "", fmt.Errorf("image %q: want host/repository:tag", ref)
	}
	i := strings.LastIndex(rest, ":")
	if i < 0 || strings.Contains(rest[i:], "/") {
		return "", "", "", fmt.Errorf("image %q: want host/repository:tag", ref)
	}
	return host, rest[:i], rest[i+1:], nil
}

// archiveBlobs serves the blobs of an OCI archive from memory.
type archiveBlobs map[string][]byte // by digest, "sha256:<hex>"

func (b archiveBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	data, ok := b[h.String()]
	if !ok {
		return nil, registry.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (b archiveBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	data, ok := b[h.String()]
	if !ok {
		return 0, registry.ErrNotFound
	}
	return int64(len(data)), nil
}

// readArchive returns the blobs of an OCI image archive and the descriptor
// of its one manifest.
func readArchive(archive []byte) (archiveBlobs, ocispec.Descriptor, error) {
	blobs := archiveBlobs{}
	var index ocispec.Index
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, ocispec.Descriptor{}, fmt.Errorf("read image archive: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, ocispec.Descriptor{}, fmt.Errorf("read image archive: %w", err)
		}
		switch {
		case hdr.Name == ocispec.ImageIndexFile:
			if err := json.Unmarshal(data, &index); err != nil {
				return nil, ocispec.Descriptor{}, fmt.Errorf("read image archive index: %w", err)
			}
		case strings.HasPrefix(hdr.Name, "blobs/sha256/"):
			blobs["sha256:"+strings.TrimPrefix(hdr.Name, "blobs/sha256/")] = data
		}
	}
	if len(index.Manifests) != 1 {
		return nil, ocispec.Descriptor{}, fmt.Errorf("image archive: %d manifests in the index, want 1", len(index.Manifests))
	}
	return blobs, index.Manifests[0], nil
}

// putManifest stores the manifest desc names (its blob in blobs) under
// repo:tag, through the registry's own API, in process.
func putManifest(h http.Handler, repo, tag string, desc ocispec.Descriptor, blobs archiveBlobs) error {
	data, ok := blobs[desc.Digest.String()]
	if !ok {
		return fmt.Errorf("manifest %s not in the archive", desc.Digest)
	}
	req := httptest.NewRequest(http.MethodPut, "/v2/"+repo+"/manifests/"+tag, bytes.NewReader(data))
	req.Header.Set("Content-Type", desc.MediaType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		return fmt.Errorf("PUT manifest %s:%s: %d %s", repo, tag, rec.Code, rec.Body.String())
	}
	return nil
}

// selfSigned makes a certificate for hosts that is its own issuer, for the
// client to trust directly.
func selfSigned(hosts []string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "containerd-shim-sandbox-v2 upstream test mirror"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		DNSNames:              hosts,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM, nil
}
