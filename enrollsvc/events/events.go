// Package events defines the audit events of the enrollment service: stable numeric IDs, each
// with a category (Admin or Operational) and a level, grouped in ranges by subsystem. A Recorder
// writes an event to the durable store and then to the structured (JSON) log. IDs are part of the
// product's interface (monitoring rules match on them): never renumber or reuse one.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

// ID is a stable audit event identifier.
type ID int

// Category separates what administrators did from what the service did on its own.
type Category string

// Categories.
const (
	Admin       Category = "Admin"
	Operational Category = "Operational"
)

// Event IDs, by range:
//
//	1000-1099 service health     1100-1199 HSM        1200-1299 directory
//	2000-2099 requests           2100-2199 issuance   2200-2299 revocation
//	3000-3099 administration and API access
//
// The MDM connector's events follow the grouping of a certificate connector for an MDM (general,
// PKCS, imported PKCS, revocation, SCEP, connector health), one hundred each from 4000:
//
//	4000-4099 MDM clients        4100-4199 PKCS (server-generated keys)   4200-4299 imported PKCS
//	4300-4399 MDM revocation     4400-4499 MDM-validated SCEP             4500-4599 connector health
const (
	ServiceStarted  ID = 1000
	ServiceStopping ID = 1001
	ServiceDegraded ID = 1010
	ServiceHealthy  ID = 1011

	HSMOpened     ID = 1100
	HSMKeyCreated ID = 1101
	HSMKeyLoaded  ID = 1102
	// HSMKeyDestroyed: a key the appliance no longer uses was destroyed in the token (e.g. the
	// single SCEP RA key of older versions, which both signed and decrypted).
	HSMKeyDestroyed ID = 1103
	// HSMTokenExported: the SoftHSM token holding the CA key left the appliance in an encrypted
	// bundle (for another appliance to join the CA); a hardware HSM's key never does.
	HSMTokenExported ID = 1104
	HSMFailure       ID = 1110
	HSMRecovered     ID = 1111

	DirectoryConnected   ID = 1200
	DirectoryUnreachable ID = 1210

	RequestReceived ID = 2000
	RequestPending  ID = 2001
	RequestApproved ID = 2002
	RequestDenied   ID = 2003
	RequestFailed   ID = 2004
	RequestRefused  ID = 2005
	// RequestOnBehalf: an enrollment agent's request for another account was issued; it names the
	// agent, the target and the agent certificates that signed.
	RequestOnBehalf ID = 2010

	SigningStarted         ID = 2100
	CertificateIssued      ID = 2101
	SigningFailed          ID = 2102
	LintRefused            ID = 2103
	KeyRefused             ID = 2104
	CACertificateMade      ID = 2110
	CertificatePublished   ID = 2120
	PublishFailed          ID = 2121
	CertificateUnpublished ID = 2122

	// KeyArchived: a private key was archived for the key recovery agents (before its
	// certificate is issued); KeyRecovered: an administrator recovered one; KeyArchiveDropped:
	// the archive of a key that was not certified after all was removed.
	KeyArchived       ID = 2130
	KeyRecovered      ID = 2131
	KeyArchiveDropped ID = 2132

	CertificateRevoked ID = 2200
	CRLPublished       ID = 2201

	DataDirInitialised  ID = 3000
	APIAuthFailed       ID = 3001
	AdminIssued         ID = 3002
	KeytabInstalled     ID = 3003
	EnrollAuthRefused   ID = 3004
	SCEPProfileAdded    ID = 3010
	SCEPChallengeIssued ID = 3011
	// SCEPAnonymousRefused counts SCEP requests refused before their challenge was right: one event
	// per profile per window, however many requests (enrollsvc.SCEPRefusalWindow).
	SCEPAnonymousRefused ID = 3012
	FirmwareInstalled    ID = 3020
	// ClusterCARecorded: the store now serves this CA (the first instance on a new store).
	ClusterCARecorded ID = 3050
	// InstanceRefused: an instance refused to serve from the shared store (another version).
	InstanceRefused ID = 3051
	// StoreMigrated: a single appliance's SQLite history was moved into PostgreSQL.
	StoreMigrated ID = 3052
	// StoreRestored: this data directory was restored from a backup (enrollsvc restore).
	StoreRestored ID = 3053
	// BackupWritten: a backup was written completely (its size, what it holds, who asked).
	BackupWritten ID = 3070
	// BackupFailed: a scheduled backup could not be written or pushed.
	BackupFailed ID = 3071
	// SettingChanged: an administrator changed an operations setting (metrics token, remote
	// syslog, backups); the event names the setting, never a secret.
	SettingChanged ID = 3060
	// KRAAdded and KRARemoved: an administrator registered or withdrew a key recovery agent.
	KRAAdded   ID = 3080
	KRARemoved ID = 3081
	// Enrollment agent restrictions added or removed by an administrator.
	AgentRestrictionAdded   ID = 3090
	AgentRestrictionRemoved ID = 3091
	// Limits: each recorded at most once per key (client address, account) per window.
	APILockout      ID = 3040
	RateLimited     ID = 3041
	PasswordStopped ID = 3042

	// MDMAdded and MDMRemoved: an administrator registered an MDM (a credential with the MDM
	// role) or withdrew it. MDMDenied: an MDM credential called something outside its role.
	MDMAdded   ID = 4000
	MDMRemoved ID = 4001
	MDMDenied  ID = 4002
	// PKCSSubmitted: an MDM (or an administrator) asked for a key pair made here and delivered
	// as a PKCS#12; PKCSIssued: the PKCS#12 is ready (the certificate's serial, never the key);
	// PKCSRefused: policy or the request refused it; PKCSFailed: it could not be done.
	// PKCSCollected: the result was fetched; PKCSExpired: results no one fetched were erased.
	PKCSSubmitted ID = 4100
	PKCSIssued    ID = 4101
	PKCSRefused   ID = 4102
	PKCSFailed    ID = 4103
	PKCSCollected ID = 4104
	PKCSExpired   ID = 4105
	// PKCSImported: a user's existing key and certificate were uploaded (kept encrypted to the
	// import key); PKCSImportDelivered: one was re-encrypted for a device.
	PKCSImported        ID = 4200
	PKCSImportDelivered ID = 4201
	// MDMRevoked: an MDM had a certificate revoked (device retired or wiped); MDMRevokeRefused:
	// the request named no certificate of this CA or was already final.
	MDMRevoked       ID = 4300
	MDMRevokeRefused ID = 4301
	// MDM-validated SCEP: the MDM accepted a challenge (the request then goes on as every
	// request), rejected it, or could not be asked; the outcome notification was delivered, or
	// given up after its retries. MDMWebhooksSet: an administrator set an MDM's URLs.
	SCEPMDMValidated     ID = 4400
	SCEPMDMRejected      ID = 4401
	SCEPMDMUnreachable   ID = 4402
	SCEPMDMNotified      ID = 4410
	SCEPMDMNotifyDropped ID = 4411
	MDMWebhooksSet       ID = 4003
	// MDMCertIssued: an administrator had a client certificate issued to an MDM.
	MDMCertIssued ID = 4004
	// Connector health: an MDM's URLs stopped answering (a network error or a 5xx, after
	// answering or since the start), or answer again. One event per change, per instance.
	MDMHooksDown ID = 4500
	MDMHooksUp   ID = 4501
)

// Def describes one event ID.
type Def struct {
	ID       ID
	Name     string
	Category Category
	Level    slog.Level
}

var defs = map[ID]Def{}

func def(id ID, name string, c Category, l slog.Level) {
	defs[id] = Def{ID: id, Name: name, Category: c, Level: l}
}

func init() {
	def(ServiceStarted, "service started", Operational, slog.LevelInfo)
	def(ServiceStopping, "service stopping", Operational, slog.LevelInfo)
	def(ServiceDegraded, "service degraded", Operational, slog.LevelError)
	def(ServiceHealthy, "service healthy again", Operational, slog.LevelInfo)
	def(HSMOpened, "HSM token opened", Operational, slog.LevelInfo)
	def(HSMKeyCreated, "CA key generated in HSM", Admin, slog.LevelInfo)
	def(HSMKeyLoaded, "CA key loaded from HSM", Operational, slog.LevelInfo)
	def(HSMKeyDestroyed, "key destroyed in HSM", Admin, slog.LevelWarn)
	def(HSMTokenExported, "SoftHSM token exported in an encrypted bundle", Admin, slog.LevelWarn)
	def(HSMFailure, "HSM failure", Operational, slog.LevelError)
	def(HSMRecovered, "HSM recovered", Operational, slog.LevelWarn)
	def(DirectoryConnected, "directory connected", Operational, slog.LevelInfo)
	def(DirectoryUnreachable, "directory unreachable", Operational, slog.LevelError)
	def(RequestReceived, "request received", Operational, slog.LevelInfo)
	def(RequestPending, "request pending approval", Operational, slog.LevelInfo)
	def(RequestApproved, "request approved", Admin, slog.LevelInfo)
	def(RequestDenied, "request denied", Admin, slog.LevelWarn)
	def(RequestFailed, "request failed", Operational, slog.LevelError)
	def(RequestRefused, "request refused by policy", Operational, slog.LevelWarn)
	def(RequestOnBehalf, "certificate issued to an enrollment agent on behalf of another account", Admin, slog.LevelInfo)
	def(CertificatePublished, "certificate published to the directory", Operational, slog.LevelInfo)
	def(PublishFailed, "publishing to the directory failed", Operational, slog.LevelError)
	def(CertificateUnpublished, "certificate removed from the directory", Operational, slog.LevelInfo)
	def(SigningStarted, "signing certificate", Operational, slog.LevelInfo)
	def(CertificateIssued, "certificate issued", Operational, slog.LevelInfo)
	def(SigningFailed, "signing failed", Operational, slog.LevelError)
	def(LintRefused, "certificate refused by lint", Operational, slog.LevelError)
	def(KeyRefused, "subject key refused by the issuance gate", Operational, slog.LevelWarn)
	def(CACertificateMade, "CA certificate created", Admin, slog.LevelInfo)
	def(KeyArchived, "private key archived for the key recovery agents", Operational, slog.LevelInfo)
	def(KeyRecovered, "archived private key recovered", Admin, slog.LevelWarn)
	def(KeyArchiveDropped, "archive of a key that was not certified removed", Operational, slog.LevelInfo)
	def(KRAAdded, "key recovery agent registered", Admin, slog.LevelWarn)
	def(AgentRestrictionAdded, "enrollment agent restriction added", Admin, slog.LevelWarn)
	def(AgentRestrictionRemoved, "enrollment agent restriction removed", Admin, slog.LevelWarn)
	def(KRARemoved, "key recovery agent removed", Admin, slog.LevelWarn)
	def(CertificateRevoked, "certificate revoked", Admin, slog.LevelWarn)
	def(CRLPublished, "CRL published", Operational, slog.LevelInfo)
	def(DataDirInitialised, "data directory initialised", Admin, slog.LevelInfo)
	def(APIAuthFailed, "API authentication failed", Admin, slog.LevelWarn)
	def(AdminIssued, "certificate issued by administrator", Admin, slog.LevelInfo)
	def(KeytabInstalled, "Kerberos service keytab installed", Admin, slog.LevelInfo)
	def(EnrollAuthRefused, "enrollment web service authentication refused", Admin, slog.LevelWarn)
	def(FirmwareInstalled, "firmware update installed for the next boot", Admin, slog.LevelInfo)
	def(ClusterCARecorded, "the store records the CA its instances serve", Admin, slog.LevelInfo)
	def(StoreMigrated, "the store was moved from SQLite to PostgreSQL", Admin, slog.LevelInfo)
	def(InstanceRefused, "an instance of another version refused to serve", Operational, slog.LevelError)
	def(SCEPProfileAdded, "SCEP profile added", Admin, slog.LevelInfo)
	def(SCEPChallengeIssued, "SCEP one-time challenge issued", Admin, slog.LevelInfo)
	def(SCEPAnonymousRefused, "SCEP requests refused: wrong or missing challenge", Admin, slog.LevelWarn)
	def(StoreRestored, "the data directory was restored from a backup", Admin, slog.LevelWarn)
	def(BackupWritten, "backup written", Admin, slog.LevelInfo)
	def(BackupFailed, "scheduled backup failed", Operational, slog.LevelError)
	def(SettingChanged, "operations setting changed", Admin, slog.LevelInfo)
	def(APILockout, "authentication locked out for a client address after repeated failures", Admin, slog.LevelWarn)
	def(RateLimited, "requests refused by a rate limit", Operational, slog.LevelWarn)
	def(PasswordStopped, "password attempts for an account stopped before the domain locks it out", Admin, slog.LevelWarn)
	def(MDMAdded, "MDM registered", Admin, slog.LevelInfo)
	def(MDMRemoved, "MDM removed", Admin, slog.LevelWarn)
	def(MDMDenied, "MDM credential refused outside its role", Admin, slog.LevelWarn)
	def(PKCSSubmitted, "PKCS request received (key made here)", Admin, slog.LevelInfo)
	def(PKCSIssued, "PKCS#12 made for a device", Admin, slog.LevelInfo)
	def(PKCSRefused, "PKCS request refused", Admin, slog.LevelWarn)
	def(PKCSFailed, "PKCS request failed", Operational, slog.LevelError)
	def(PKCSCollected, "PKCS#12 collected", Operational, slog.LevelInfo)
	def(PKCSExpired, "PKCS#12 results expired uncollected", Operational, slog.LevelWarn)
	def(MDMWebhooksSet, "MDM validation and notification URLs set", Admin, slog.LevelInfo)
	def(MDMCertIssued, "client certificate issued to an MDM", Admin, slog.LevelInfo)
	def(SCEPMDMValidated, "SCEP challenge validated by the MDM", Operational, slog.LevelInfo)
	def(SCEPMDMRejected, "SCEP challenge rejected by the MDM", Admin, slog.LevelWarn)
	def(SCEPMDMUnreachable, "the MDM could not be asked to validate a SCEP challenge", Operational, slog.LevelError)
	def(SCEPMDMNotified, "SCEP outcome delivered to the MDM", Operational, slog.LevelInfo)
	def(SCEPMDMNotifyDropped, "SCEP outcome notification given up after its retries", Operational, slog.LevelError)
	def(MDMHooksDown, "an MDM's URLs stopped answering", Operational, slog.LevelError)
	def(MDMHooksUp, "an MDM's URLs answer again", Operational, slog.LevelInfo)
	def(PKCSImported, "key and certificate imported for a user (PKCS import)", Admin, slog.LevelInfo)
	def(PKCSImportDelivered, "imported key re-encrypted for a device", Admin, slog.LevelInfo)
	def(MDMRevoked, "certificate revoked at an MDM's request", Admin, slog.LevelWarn)
	def(MDMRevokeRefused, "MDM revocation request refused", Admin, slog.LevelWarn)
}

// Limited records event id for a refusal by a limit when d says to report it: the first
// refusal of its key in the limit's window. Other refusals are not recorded (the next report
// counts them as suppressed), so a flood writes a bounded number of events. r may be nil.
func (r *Recorder) Limited(ctx context.Context, id ID, d ratelimit.Decision, kv ...any) {
	if r == nil || !d.Report {
		return
	}
	kv = append(kv, "retry_after_s", ratelimit.RetryAfterSeconds(d.RetryAfter), "suppressed", d.Suppressed)
	_ = r.Record(ctx, id, "", kv...) // Record logs its own failure
}

// Lookup returns the definition of id.
func Lookup(id ID) (Def, bool) {
	d, ok := defs[id]
	return d, ok
}

// All returns every defined event, ordered by ID.
func All() []Def {
	out := make([]Def, 0, len(defs))
	for _, d := range defs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warning"
	}
	return "info"
}

// New builds the stored form of an event. msg completes the event's name; kv are alternating
// key/value pairs as for slog (values must marshal to JSON). It panics on an undefined ID, which
// is a programming error caught by the tests.
func New(now time.Time, id ID, msg string, kv ...any) store.Event {
	d, ok := defs[id]
	if !ok {
		panic(fmt.Sprintf("events: undefined event ID %d", id))
	}
	var fields map[string]any
	if len(kv) > 0 {
		fields = make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			fields[fmt.Sprint(kv[i])] = kv[i+1]
		}
	}
	if msg == "" {
		msg = d.Name
	}
	return store.Event{ID: int(id), Category: string(d.Category), Level: levelName(d.Level),
		Time: now.UTC(), Message: msg, Fields: fields}
}

// Appender is the part of the store a Recorder writes to.
type Appender interface {
	AppendEvent(ctx context.Context, e store.Event) (int64, error)
}

// Recorder writes audit events to the store and the structured log.
type Recorder struct {
	store    Appender
	log      *slog.Logger
	now      func() time.Time
	observer atomic.Pointer[func(context.Context, store.Event)]
}

// SetObserver has f called with every event the recorder logs (after it was stored), with the
// context of the request that caused it: metrics count what the audit trail records.
func (r *Recorder) SetObserver(f func(context.Context, store.Event)) { r.observer.Store(&f) }

// NewRecorder returns a Recorder. now may be nil (time.Now).
func NewRecorder(s Appender, log *slog.Logger, now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Recorder{store: s, log: log, now: now}
}

// Now is the recorder's clock.
func (r *Recorder) Now() time.Time { return r.now() }

// Record stores the event and logs it. The log line is written even when the store fails, so
// the event is never lost silently; the store error is returned.
func (r *Recorder) Record(ctx context.Context, id ID, msg string, kv ...any) error {
	e := New(r.now(), id, msg, kv...)
	seq, err := r.store.AppendEvent(ctx, e)
	e.Seq = seq
	r.Log(ctx, e)
	if err != nil {
		r.log.ErrorContext(ctx, "audit event not stored", "event_id", e.ID, "error", err)
		return fmt.Errorf("storing audit event %d: %w", e.ID, err)
	}
	return nil
}

// Log writes an already stored event to the structured log.
func (r *Recorder) Log(ctx context.Context, e store.Event) {
	level := slog.LevelInfo
	if d, ok := defs[ID(e.ID)]; ok {
		level = d.Level
	}
	attrs := []slog.Attr{slog.Int("event_id", e.ID), slog.String("category", e.Category)}
	if e.Seq != 0 {
		attrs = append(attrs, slog.Int64("seq", e.Seq))
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, e.Fields[k]))
	}
	r.log.LogAttrs(ctx, level, e.Message, slog.Attr{Key: "audit", Value: slog.GroupValue(attrs...)})
	if o := r.observer.Load(); o != nil {
		(*o)(ctx, e)
	}
}
