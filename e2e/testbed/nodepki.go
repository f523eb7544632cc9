package testbed

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// nodePKI is the node's throwaway certificate authority and the keys signed
// by it, written as PEM files under dir.
type nodePKI struct {
	dir    string
	ca     *CA
	CACert string // path of the CA certificate
	// ServiceAccountKey signs service-account tokens (RSA: what Vault's
	// kubernetes auth and every other verifier accept).
	ServiceAccountKey, ServiceAccountPub string
}

// newNodePKI creates the CA under dir.
func newNodePKI(dir string) (*nodePKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := NewCA("podlease-testbed-node-ca")
	if err != nil {
		return nil, err
	}
	p := &nodePKI{dir: dir, ca: ca, CACert: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(p.CACert, ca.PEM, 0o600); err != nil {
		return nil, err
	}
	if err := p.writeKey("ca.key", ca.Key); err != nil {
		return nil, err
	}

	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	p.ServiceAccountKey = filepath.Join(dir, "sa.key")
	p.ServiceAccountPub = filepath.Join(dir, "sa.pub")
	if err := writePEM(p.ServiceAccountKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa)); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	return p, writePEM(p.ServiceAccountPub, "PUBLIC KEY", pub)
}

// issue signs a certificate for cn (groups as O) and writes name.crt and
// name.key; hosts become SANs and make it a serving certificate as well.
func (p *nodePKI) issue(name, cn string, groups []string, hosts ...string) (certFile, keyFile string, err error) {
	der, key, err := p.ca.Issue(cn, groups, hosts...)
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(p.dir, name+".crt")
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	return certFile, filepath.Join(p.dir, name+".key"), p.writeKey(name+".key", key)
}

func (p *nodePKI) writeKey(name string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(p.dir, name), "EC PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// kubeconfig writes a kubeconfig for server with the client certificate
// given, trusting the node's CA.
func (p *nodePKI) kubeconfig(path, server, certFile, keyFile string) error {
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: node
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: user
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: node
  context: {cluster: node, user: user}
current-context: node
`, server, p.CACert, certFile, keyFile)
	return os.WriteFile(path, []byte(text), 0o600)
}
