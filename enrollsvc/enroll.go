package enrollsvc

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Directory is what the core needs of Active Directory.
type Directory interface {
	Publisher
	EnrollmentService(ctx context.Context, caCN string) (ldap.EnrollmentService, error)
	Templates(ctx context.Context, cns []string) ([]ldap.Entry, error)
	Account(ctx context.Context, name string, extraAttrs ...string) (*ldap.Account, error)
	// DNSNameHolders names every object holding each DNS name as dNSHostName or HOST/ SPN.
	DNSNameHolders(ctx context.Context, names []string) (map[string][]string, error)
	// UPNHolders names every account holding each UPN, explicitly or implicitly.
	UPNHolders(ctx context.Context, upns []string) (map[string][]string, error)
	// Principal finds a user, computer or group by name or SID: its SID and sAMAccountName.
	Principal(ctx context.Context, name string) (secdesc.SID, string, error)
}

// TemplateSettings are the appliance's additions to a directory template.
type TemplateSettings struct {
	ExtraSubject []string
	Custom       []policy.CustomExtension
}

// DirectoryConfig connects the service to the directory.
type DirectoryConfig struct {
	Dir      Directory
	CACN     string // cn of the pKIEnrollmentService object that lists the offered templates
	Settings map[string]TemplateSettings
}

// WithDirectory makes the service take templates, permissions and accounts from the directory.
// Call it once, before the service is used.
func (s *Service) WithDirectory(dc DirectoryConfig) *Service {
	s.dir = &dc
	return s
}

func (s *Service) directory(op string) (*DirectoryConfig, error) {
	if s.dir == nil || s.dir.Dir == nil {
		return nil, &Error{Kind: KindUnavailable, Op: op, Err: errors.New("no directory is configured (enrollsvc init --ldap-url ...)")}
	}
	return s.dir, nil
}

// dirError classifies a directory error.
func dirError(op string, err error) error {
	kind := KindInternal
	switch {
	case errors.Is(err, ldap.ErrUnavailable), errors.Is(err, ldap.ErrBind):
		kind = KindUnavailable
	case errors.Is(err, ldap.ErrNotFound):
		kind = KindNotFound
	}
	return &Error{Kind: kind, Op: op, Err: err}
}

// OfferedTemplate is a template this CA offers, decoded, or why it could not be.
type OfferedTemplate struct {
	Name     string
	Template *policy.Template
	Error    string
	Changed  time.Time // the template object's whenChanged (zero if absent)
}

// OfferedTemplates lists the templates the enrollment-service object names, decoded.
func (s *Service) OfferedTemplates(ctx context.Context) ([]OfferedTemplate, error) {
	dc, err := s.directory("listing templates")
	if err != nil {
		return nil, err
	}
	es, err := dc.Dir.EnrollmentService(ctx, dc.CACN)
	if err != nil {
		return nil, dirError("reading the enrollment service "+dc.CACN, err)
	}
	entries, err := dc.Dir.Templates(ctx, es.CertificateTemplates)
	if err != nil {
		return nil, dirError("reading templates", err)
	}
	byName := map[string]ldap.Entry{}
	for _, e := range entries {
		byName[strings.ToLower(e.Get("cn"))] = e
	}
	out := make([]OfferedTemplate, 0, len(es.CertificateTemplates))
	for _, name := range es.CertificateTemplates {
		ot := OfferedTemplate{Name: name}
		e, ok := byName[strings.ToLower(name)]
		if ok {
			ot.Changed, _ = time.Parse("20060102150405.0Z0700", e.Get("whenChanged"))
		}
		if !ok {
			ot.Error = "listed by the enrollment service but not found in the directory"
		} else if t, err := policy.ParseTemplate(e.Attrs); err != nil {
			ot.Error = err.Error()
		} else {
			ot.Template = &t
		}
		out = append(out, ot)
	}
	return out, nil
}

func (s *Service) template(ctx context.Context, dc *DirectoryConfig, name string) (*policy.Template, []string, error) {
	list, err := s.OfferedTemplates(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, ot := range list {
		if strings.EqualFold(ot.Name, name) || ot.Template != nil && templateMatches(ot.Template, name) {
			if ot.Template == nil {
				return nil, []string{fmt.Sprintf("template %s cannot be used: %s", name, ot.Error)}, nil
			}
			return ot.Template, nil, nil
		}
	}
	return nil, []string{fmt.Sprintf("template %s is not offered by this CA (%s)", name, dc.CACN)}, nil
}

func (s *Service) account(ctx context.Context, dc *DirectoryConfig, name string, t *policy.Template) (*policy.Account, []string, error) {
	var extra []string
	if t != nil {
		set := dc.Settings[t.Name]
		extra = append(extra, set.ExtraSubject...)
		for _, c := range set.Custom {
			extra = append(extra, c.Attribute)
		}
	}
	a, err := dc.Dir.Account(ctx, name, extra...)
	if errors.Is(err, ldap.ErrNotFound) || errors.Is(err, ldap.ErrAmbiguous) {
		return nil, []string{fmt.Sprintf("account %q: %v", name, err)}, nil
	}
	if err != nil {
		return nil, nil, dirError("looking up account "+name, err)
	}
	if reasons := accountState(a, s.rec.Now()); reasons != nil {
		return nil, reasons, nil
	}
	pa, err := policy.ParseAccount(a.DN, a.Attrs, a.Groups)
	if err != nil {
		return nil, []string{fmt.Sprintf("account %q cannot be used: %v", name, err)}, nil
	}
	return &pa, nil, nil
}

// accountState is why an account may not have a certificate now, whoever asks: an account that
// does not authenticate itself here (a SCEP profile's, the enroll API's, a renewal's, a held
// request's) must not outlive its disabling (userAccountControl ACCOUNTDISABLE), its lockout
// (msDS-User-Account-Control-Computed UF_LOCKOUT, MS-ADTS 3.1.1.4.5.17) or its expiry
// (accountExpires). A certificate would outlive all three: it logs on (PKINIT, Schannel) for its
// whole lifetime. A deleted account is not found at all (lookups by SID or DN do not see the
// Deleted Objects container). An expired password is not a reason: service and computer accounts
// renew their certificates whatever their password's age, as AD CS lets them.
func accountState(a *ldap.Account, now time.Time) []string {
	var reasons []string
	if a.Disabled() {
		reasons = append(reasons, fmt.Sprintf("account %s is disabled", a.DN))
	}
	if a.LockedOut() {
		reasons = append(reasons, fmt.Sprintf("account %s is locked out", a.DN))
	}
	if t, ok := a.ExpiresAt(); ok && !now.Before(t) {
		reasons = append(reasons, fmt.Sprintf("account %s expired at %s", a.DN, t.UTC().Format(time.RFC3339)))
	}
	return reasons
}

func (s *Service) input(ctx context.Context, dc *DirectoryConfig, t policy.Template, a policy.Account, r *policy.Request, autoenroll bool, names namesMode) (policy.Input, error) {
	set := dc.Settings[t.Name]
	in := policy.Input{Template: t, Account: a, Request: r, CACert: s.issuer.CACert(), Now: s.rec.Now(),
		Autoenroll: autoenroll, Custom: set.Custom, ExtraSubject: set.ExtraSubject, Names: s.aceNames(ctx, dc, t, names)}
	if names := a.DNSNames(); len(names) > 0 {
		// Policy certifies a host name only when no other object holds it (Certifried).
		holders, err := dc.Dir.DNSNameHolders(ctx, names)
		if err != nil {
			return policy.Input{}, dirError("looking up the holders of "+a.DNSHostName, err)
		}
		in.DNSHolders = holders
	}
	if a.UPN != "" {
		// Nor a UPN that is also another account's (explicit or implicit).
		holders, err := dc.Dir.UPNHolders(ctx, []string{a.UPN})
		if err != nil {
			return policy.Input{}, dirError("looking up the holders of "+a.UPN, err)
		}
		in.UPNHolders = holders
	}
	return in, nil
}

// SIDNamer is a directory that can name SIDs (optional).
type SIDNamer interface {
	SIDNames(ctx context.Context, sids []secdesc.SID) (map[string]string, error)
	// CachedSIDNames answers from what the directory client has cached, without a round trip;
	// complete is false when some SID is not cached.
	CachedSIDNames(sids []secdesc.SID) (names map[string]string, complete bool)
}

// How aceNames resolves the names of ACE trustees (namesWait, namesCached, namesNone).
type namesMode int

const (
	namesWait   namesMode = iota // now, with a round trip if the cache lacks them (explain)
	namesCached                  // from the cache, filled in the background when it lacks them (requests)
	namesNone                    // not at all: no reason is shown (the policy listing)
)

// aceNames names the trustees of t's ACEs, so that reasons say which group decided. Names are
// for people: a failure leaves the SIDs as they are. A request's decision (namesCached) takes the
// names the directory client has cached and never waits for a round trip: if some are missing, one
// background search fills the cache for the next decisions, and this one's reasons show SIDs
// where names are missing. Explain waits for them; the policy listing shows no reason and needs
// none.
func (s *Service) aceNames(ctx context.Context, dc *DirectoryConfig, t policy.Template, mode namesMode) map[string]string {
	namer, ok := dc.Dir.(SIDNamer)
	if !ok || t.SD == nil || t.SD.DACL == nil || mode == namesNone {
		return nil
	}
	sids := make([]secdesc.SID, 0, len(t.SD.DACL.ACEs))
	for _, a := range t.SD.DACL.ACEs {
		sids = append(sids, a.SID)
	}
	if mode == namesCached {
		names, complete := namer.CachedSIDNames(sids)
		if !complete && s.naming.CompareAndSwap(false, true) {
			go func() {
				defer s.naming.Store(false)
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				if _, err := namer.SIDNames(ctx, sids); err != nil {
					s.log.DebugContext(ctx, "naming ACE trustees", "template", t.Name, "error", err)
				}
			}()
		}
		return names
	}
	names, err := namer.SIDNames(ctx, sids)
	if err != nil {
		s.log.DebugContext(ctx, "naming ACE trustees", "template", t.Name, "error", err)
	}
	return names
}

// Explanation is what policy would decide for an account, template by template.
type Explanation struct {
	Account   *policy.Account
	Decisions []policy.Decision
	Errors    []string // templates that could not be evaluated, with why
	Reasons   []string // why nothing could be evaluated (e.g. no such account)
}

// Explain evaluates every offered template (or only template) for an account, without a request.
func (s *Service) Explain(ctx context.Context, account, template string) (*Explanation, error) {
	dc, err := s.directory("explaining")
	if err != nil {
		return nil, err
	}
	list, err := s.OfferedTemplates(ctx)
	if err != nil {
		return nil, err
	}
	ex := &Explanation{}
	found := false
	for _, ot := range list {
		if template != "" && !strings.EqualFold(ot.Name, template) {
			continue
		}
		found = true
		if ot.Template == nil {
			ex.Errors = append(ex.Errors, fmt.Sprintf("%s: %s", ot.Name, ot.Error))
			continue
		}
		a, reasons, err := s.account(ctx, dc, account, ot.Template)
		if err != nil {
			return nil, err
		}
		if reasons != nil {
			ex.Reasons = reasons
			return ex, nil
		}
		ex.Account = a
		in, err := s.input(ctx, dc, *ot.Template, *a, nil, false, namesWait)
		if err != nil {
			return nil, err
		}
		ex.Decisions = append(ex.Decisions, policy.Decide(in))
	}
	if !found {
		if template != "" {
			ex.Reasons = []string{fmt.Sprintf("template %s is not offered by this CA (%s)", template, dc.CACN)}
		} else {
			ex.Reasons = []string{fmt.Sprintf("the enrollment service %s offers no templates", dc.CACN)}
		}
	}
	return ex, nil
}

// EnrollRequest is a certificate request for a directory account.
type EnrollRequest struct {
	Template   string // may be empty when the CSR names its template
	Account    string // the authenticated account (never what the CSR claims)
	Requester  string
	CSR        []byte // DER PKCS#10
	Autoenroll bool
	// KeyArchived: the CSR's private key is archived (EnrollServerKey did it): policy.Input.KeyArchived.
	KeyArchived bool
	// NamedByConnector: Account was named by a connector (an MDM), not authenticated:
	// policy.Input.NamedByConnector.
	NamedByConnector bool
	// ArchivedKey is the private key the client sent to be archived (MS-WCCE 3.1.1.4.3.6): the
	// envelope to the CA exchange certificate of a key archival request (cmc.Request.ArchivedKey).
	// The template must require archival and the key must be the request's, or the request is
	// refused; the key is archived for the recovery agents before anything is issued.
	ArchivedKey []byte
	// OnBehalf, for a request an enrollment agent made for Account (the target as the request
	// names it), says who the agent is and what signed it.
	OnBehalf *OnBehalf
	// Reenrollment: a renewal of a valid certificate of the template (Renew checked it):
	// policy.Input.Reenrollment.
	Reenrollment bool
	// SCEP is the SCEP transaction the request came with: Meta.SCEP.
	SCEP *store.SCEPTransaction
}

// Outcomes of Enroll.
const (
	StatusIssued  = "issued"
	StatusPending = "pending"
	StatusDenied  = "denied"
)

// EnrollResult is what became of an EnrollRequest.
type EnrollResult struct {
	Status      string
	RequestID   int64
	Certificate *x509.Certificate
	Reasons     []string
	Decision    *policy.Decision
	// Code is the AD CS error of a refusal that has a specific one (policy.Code...), else "".
	Code string
}

// Enroll runs a request through the directory's policy: issue, hold for approval or refuse.
// Refusals are results (with every reason), not errors; errors mean the request could not be
// decided (bad input, directory or HSM down).
func (s *Service) Enroll(ctx context.Context, er EnrollRequest) (*EnrollResult, error) {
	dc, err := s.directory("enrolling")
	if err != nil {
		return nil, err
	}
	req, err := policy.ParseRequest(er.CSR)
	if err != nil {
		return nil, &Error{Kind: KindBadRequest, Op: "reading the request", Err: err}
	}
	named := req.TemplateName // what the request itself names, by name or OID
	if named == "" && len(req.TemplateOID) > 0 {
		named = req.TemplateOID.String()
	}
	name := er.Template
	if name == "" {
		name = named
	}
	if name == "" {
		return nil, &Error{Kind: KindBadRequest, Op: "reading the request", Err: errors.New("no template: name one, or put the template extension in the request")}
	}
	meta := Meta{Requester: er.Requester, Account: er.Account, Template: name, CSR: er.CSR, SCEP: er.SCEP}
	if er.OnBehalf != nil {
		meta.Agent = er.OnBehalf.Agent // as authenticated; its sAMAccountName once looked up
	}
	t, reasons, err := s.template(ctx, dc, name)
	if err != nil {
		return nil, err
	}
	if reasons != nil {
		return s.refuse(ctx, meta, reasons, nil)
	}
	if named != "" && !templateMatches(t, named) {
		return s.refuse(ctx, meta, []string{fmt.Sprintf("the request names template %s, not %s", named, t.Name)}, nil)
	}
	// From here the request is recorded under the template's name, however the client named it
	// (by OID in the template extension, MS-WCCE §2.2.2.7.7.2): one name per template in the
	// store, the audit trail and the metrics.
	meta.Template = t.Name
	a, reasons, err := s.account(ctx, dc, er.Account, t)
	if err != nil {
		return nil, err
	}
	if reasons != nil {
		return s.refuse(ctx, meta, reasons, nil)
	}
	meta.Account = accountName(a)
	var agent *policy.Account
	var agentSigs []policy.AgentSignature
	var restrictions []policy.AgentRestriction
	if er.OnBehalf != nil {
		agent, agentSigs, restrictions, reasons, err = s.agentInput(ctx, dc, er.OnBehalf)
		if err != nil {
			return nil, err
		}
		if reasons != nil {
			return s.refuse(ctx, meta, reasons, nil)
		}
		meta.Agent = accountName(agent)
	}
	var clientKey crypto.Signer // the key the client archives, once checked
	if er.ArchivedKey != nil {
		if t.PrivateKeyFlags&policy.PrivateKeyRequireArchival == 0 {
			res, err := s.refuse(ctx, meta, []string{fmt.Sprintf("the request carries its private key for archival, and template %s "+
				"does not archive keys (CERTSRV_E_ARCHIVED_KEY_UNEXPECTED)", t.Name)}, nil)
			if res != nil {
				res.Code = policy.CodeArchivedKeyUnexpected
			}
			return res, err
		}
		k, reason, err := s.openArchivedKey(ctx, er.ArchivedKey, req.PublicKey)
		if err != nil {
			return nil, err
		}
		if reason != "" {
			return s.refuse(ctx, meta, []string{reason}, nil)
		}
		clientKey = k
	}
	in, err := s.input(ctx, dc, *t, *a, &req, er.Autoenroll, namesCached)
	if err != nil {
		return nil, err
	}
	in.KeyArchived, in.NamedByConnector = er.KeyArchived || clientKey != nil, er.NamedByConnector
	if !in.KeyArchived && er.Reenrollment && t.PrivateKeyFlags&policy.PrivateKeyRequireArchival != 0 {
		// A renewal whose key is archived already (the same key renewed) needs no new archive:
		// MS-WCCE 3.2.2.6.2.1.4.5.7 has the CA ignore the archival flag on same-key renewals.
		in.KeyArchived = s.isArchived(ctx, req.PublicKey)
	}
	in.Agent, in.AgentSignatures, in.AgentRestrictions = agent, agentSigs, restrictions
	in.Reenrollment = er.Reenrollment
	d := policy.Decide(in)
	if d.Outcome == policy.Refuse {
		return s.refuse(ctx, meta, d.Reasons, &d)
	}
	// A client's archived key is kept for the recovery agents before the request is held or
	// issued (MS-WCCE 3.2.2.6.2.1.3), and dropped again if it comes to nothing.
	archived := ""
	if clientKey != nil {
		h, reasons, err := s.archiveKey(ctx, clientKey, t, meta)
		if err != nil {
			return nil, err
		}
		if reasons != nil {
			return s.refuse(ctx, meta, reasons, &d)
		}
		archived = h
	}
	if d.Outcome == policy.Pend {
		// Hold only what could be issued: lint it now, not when the manager approves.
		if _, err := s.issuer.Prepare(d.Order); err != nil {
			s.dropArchive(ctx, archived, "the request cannot be issued")
			return s.refuse(ctx, meta, append(slices.Clone(d.Reasons), err.Error()), &d)
		}
		id, err := s.Hold(ctx, d.Order, Held{Subject: d.Subject, SANs: d.SANs, Publish: d.Publish, AccountDN: a.DN, AccountSID: a.SID.String(), Reasons: d.Reasons}, meta)
		if err != nil {
			s.dropArchive(ctx, archived, "holding the request failed")
			return nil, err
		}
		return &EnrollResult{Status: StatusPending, RequestID: id, Reasons: d.Reasons, Decision: &d}, nil
	}
	var extra []store.Event
	if agent != nil {
		serials := make([]string, len(agentSigs))
		for i, sig := range agentSigs {
			serials[i] = sig.Serial
		}
		extra = append(extra, events.New(s.rec.Now(), events.RequestOnBehalf, "", "agent", meta.Agent, "agent_sid", agent.SID.String(),
			"target", meta.Account, "target_sid", a.SID.String(), "template", t.Name, "agent_certificates", serials, "requester", meta.Requester))
	}
	res, err := s.issueOrder(ctx, d.Order, meta, extra...)
	if err != nil {
		s.dropArchive(ctx, archived, "the request was not issued: "+err.Error())
		return nil, err
	}
	reasons = d.Reasons
	if d.Publish {
		if err := s.Publish(ctx, dc.Dir, a.DN, res); err != nil {
			reasons = append(slices.Clone(reasons), err.Error())
		}
	}
	return &EnrollResult{Status: StatusIssued, RequestID: res.RequestID, Certificate: res.Certificate, Reasons: reasons, Decision: &d}, nil
}

// accountName is how requests and certificates name an account: its sAMAccountName.
func accountName(a *policy.Account) string {
	if a.SAMAccountName != "" {
		return a.SAMAccountName
	}
	return a.DN
}

// refuse records a request policy refused and returns the result that says why.
func (s *Service) refuse(ctx context.Context, m Meta, reasons []string, d *policy.Decision) (*EnrollResult, error) {
	now := s.rec.Now()
	ev := events.New(now, events.RequestRefused, "", append([]any{"account", m.Account, "template", m.Template,
		"requester", m.Requester, "reasons", slices.Clone(reasons)}, m.fields()...)...)
	id, err := s.store.CreateRequest(ctx, store.Request{State: store.RequestDenied, Template: m.Template,
		Requester: m.Requester, Account: m.Account, CSR: m.CSR, Submitted: now, Updated: now,
		Reason: strings.Join(reasons, "; "), SCEP: m.SCEP}, ev)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Op: "recording refused request", Err: err}
	}
	ev.Fields["request_id"] = id
	s.rec.Log(ctx, ev)
	res := &EnrollResult{Status: StatusDenied, RequestID: id, Reasons: reasons, Decision: d}
	if d != nil {
		res.Code = d.Code
	}
	return res, nil
}

// ApproveRequest is Approve with the directory as publisher.
func (s *Service) ApproveRequest(ctx context.Context, id int64, by string) (*Issued, error) {
	var pub Publisher
	if s.dir != nil {
		pub = s.dir.Dir
	}
	return s.Approve(ctx, id, by, pub)
}

// templateMatches reports whether name names t, by cn or by template OID.
func templateMatches(t *policy.Template, name string) bool {
	return strings.EqualFold(t.Name, name) || len(t.OID) > 0 && t.OID.String() == name
}
