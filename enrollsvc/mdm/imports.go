package mdm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// ImportKey is the appliance's import key: an RSA key in the HSM that only decrypts, and its
// certificate (issued by the CA, keyUsage keyEncipherment), which uploads are encrypted to.
type ImportKey struct {
	Cert *x509.Certificate
	Key  crypto.Decrypter
	// RejectionKey makes the implicit rejection of a bad envelope deterministic (cms.DecryptOptions).
	RejectionKey []byte
}

// Accounts looks up the directory object an account name names (enrollsvc.Service).
type Accounts interface {
	DirectoryAccount(ctx context.Context, name string) (*policy.Account, error)
}

// MaxImport bounds an uploaded envelope.
const MaxImport = 32 << 10

// ImportCertificate is the certificate uploads are encrypted to.
func (c *Connector) ImportCertificate() (*x509.Certificate, error) {
	if c.cfg.Import == nil {
		return nil, unavailable("imported PKCS needs the import key, which this service does not have")
	}
	return c.cfg.Import.Cert, nil
}

func unavailable(why string) error {
	return &enrollsvc.Error{Kind: enrollsvc.KindUnavailable, Op: "imported PKCS", Err: errors.New(why)}
}

// open decrypts an envelope to the import key and reads the PKCS#12 in it (with password), in
// memory: the key and its certificate.
func (c *Connector) open(envelope []byte, password string) (crypto.PrivateKey, *x509.Certificate, error) {
	ik := c.cfg.Import
	ed, err := cms.ParseEnvelopedData(envelope)
	if err != nil {
		return nil, nil, badRequest("the upload is not a CMS EnvelopedData: %v", err)
	}
	if !slices.ContainsFunc(ed.Recipients, func(r cms.KeyTransRecipient) bool { return r.RID.Matches(ik.Cert) }) {
		return nil, nil, badRequest("the upload is not encrypted to this appliance's import certificate (GET %s)", apiclient.MDMImportCertPath)
	}
	pfx, err := ed.Decrypt(ik.Cert, ik.Key, cms.DecryptOptions{RejectionKey: ik.RejectionKey})
	if err != nil {
		return nil, nil, badRequest("the upload does not decrypt with the import key: %v", err)
	}
	defer clear(pfx)
	key, cert, _, err := pkcs12.DecodeChain(pfx, password)
	if err != nil {
		return nil, nil, badRequest("the PKCS#12 in the upload does not open (wrong password?): %v", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok || !certutil.PublicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, nil, badRequest("the PKCS#12's key does not match its certificate")
	}
	return key, cert, nil
}

// Import keeps a user's existing key and certificate (an S/MIME PKCS#12, encrypted to the import
// certificate) for account: the certificate must carry the e-mail address the directory gives the
// account (so that one user's key is never handed to another's devices). It is kept encrypted to
// the import key, its own password dropped; the clear key exists only in memory meanwhile.
func (c *Connector) Import(ctx context.Context, mdm string, in apiclient.MDMImportRequest, remote string) (apiclient.MDMImport, error) {
	var out apiclient.MDMImport
	if c.cfg.Import == nil || c.cfg.Accounts == nil {
		return out, unavailable("imported PKCS needs the import key and a directory")
	}
	if strings.TrimSpace(in.Account) == "" || len(in.Envelope) == 0 {
		return out, badRequest("account and envelope are required")
	}
	if len(in.Envelope) > MaxImport {
		return out, badRequest("the envelope is larger than %d bytes", MaxImport)
	}
	a, err := c.cfg.Accounts.DirectoryAccount(ctx, in.Account)
	if err != nil {
		return out, err
	}
	key, cert, err := c.open(in.Envelope, in.Password)
	if err != nil {
		return out, err
	}
	switch {
	case a.Mail == "":
		return out, badRequest("the directory gives %s no e-mail address: an S/MIME key cannot be bound to it", in.Account)
	case !slices.ContainsFunc(cert.EmailAddresses, func(e string) bool { return strings.EqualFold(e, a.Mail) }):
		return out, badRequest("the certificate is for %v, not %s's address %s", cert.EmailAddresses, in.Account, a.Mail)
	}
	// Kept as a PKCS#12 without a password inside an envelope to the import key: only the HSM
	// opens it again.
	pfx, err := pkcs12.Modern2023.Encode(key, cert, nil, "")
	key = nil
	if err != nil {
		return out, err
	}
	env, err := cms.Encrypt(pfx, c.cfg.Import.Cert, cms.AES256CBC)
	clear(pfx)
	if err != nil {
		return out, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return out, err
	}
	sum := sha256.Sum256(cert.Raw)
	account := a.SAMAccountName
	if account == "" {
		account = a.DN
	}
	im := store.MDMImport{ID: hex.EncodeToString(id), MDM: mdm, Account: account, Subject: cert.Subject.String(), Email: a.Mail,
		Serial: certutil.SerialString(cert.SerialNumber), Thumbprint: hex.EncodeToString(sum[:]), NotAfter: cert.NotAfter,
		Envelope: env, Created: c.now()}
	ev := events.New(im.Created, events.PKCSImported, "", "import", im.ID, "mdm", mdm, "account", im.Account, "email", im.Email,
		"subject", im.Subject, "serial", im.Serial, "thumbprint_sha256", im.Thumbprint, "remote", remote)
	if err := c.store().AddMDMImport(ctx, im, ev); err != nil {
		return out, &enrollsvc.Error{Kind: enrollsvc.KindOf(err), Op: "keeping an imported key", Err: err}
	}
	c.cfg.Recorder.Log(ctx, ev)
	return importView(im), nil
}

func (c *Connector) store() store.MDMImportStore { return c.cfg.Store }

func importView(im store.MDMImport) apiclient.MDMImport {
	return apiclient.MDMImport{ID: im.ID, MDM: im.MDM, Account: im.Account, Subject: im.Subject, Email: im.Email, Serial: im.Serial,
		Thumbprint: im.Thumbprint, NotAfter: im.NotAfter, Created: im.Created}
}

// Imports lists the imported keys of account ("" all) an MDM may use: its own uploads (an
// administrator: every one).
func (c *Connector) Imports(ctx context.Context, mdm, account string) ([]apiclient.MDMImport, error) {
	ims, err := c.store().ListMDMImports(ctx, account)
	if err != nil {
		return nil, err
	}
	out := []apiclient.MDMImport{}
	for _, im := range ims {
		if mdm == Admin || im.MDM == mdm {
			out = append(out, importView(im))
		}
	}
	return out, nil
}

// Deliver re-encrypts an imported key for one of its user's devices: the PKCS#12 (empty password)
// inside a CMS EnvelopedData to the device's RSA key (RSAES-OAEP, AES-256). The key is opened in
// memory with the import key and never written.
func (c *Connector) Deliver(ctx context.Context, mdm, id string, in apiclient.MDMDeliverRequest, remote string) ([]byte, error) {
	if c.cfg.Import == nil {
		return nil, unavailable("imported PKCS needs the import key")
	}
	im, err := c.store().GetMDMImport(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && mdm != Admin && im.MDM != mdm {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindNotFound, Op: "delivering imported key " + id, Err: errors.New("no such imported key")}
	}
	if err != nil {
		return nil, err
	}
	if len(in.DeviceID) > 128 {
		return nil, badRequest("device_id: at most 128 characters")
	}
	pub, devCert, err := ParseRecipient([]byte(in.RecipientPEM))
	if err != nil {
		return nil, badRequest("recipient: %v", err)
	}
	key, cert, err := c.open(im.Envelope, "")
	if err != nil {
		// Kept encrypted to the import key of the instance that took the upload: in a cluster
		// whose instances made their own import keys (the key was not in the token bundle they
		// joined with), another instance cannot open it.
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindUnavailable, Op: "opening imported key " + id,
			Err: fmt.Errorf("this instance's import key does not open it (imported through an instance with another import key?): %w", err)}
	}
	pfx, err := pkcs12.Modern2023.Encode(key, cert, nil, "")
	key = nil
	if err != nil {
		return nil, err
	}
	env, err := cms.EncryptOAEP(pfx, pub, devCert, cms.AES256CBC)
	clear(pfx)
	if err != nil {
		return nil, err
	}
	_ = c.cfg.Recorder.Record(ctx, events.PKCSImportDelivered, "", "import", im.ID, "mdm", mdm, "account", im.Account,
		"device_id", in.DeviceID, "thumbprint_sha256", im.Thumbprint, "remote", remote)
	return env, nil
}
