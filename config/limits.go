package config

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Limits bound what one client may ask of the public services. Every field is optional: a
// missing one takes its default (LimitsOrDefault). The defaults let a logon storm of 10,000
// clients behind a few NAT addresses through (per-source limits are high) and stop one
// account or one address from taking the service for itself.
type Limits struct {
	// EnrollPerSource limits the enrollment web services' requests (MS-XCEP, MS-WSTEP) per
	// client address (an IPv6 /64).
	EnrollPerSource *RateLimit `json:"enroll_per_source,omitempty"`
	// EnrollPerAccount limits them per authenticated account.
	EnrollPerAccount *RateLimit `json:"enroll_per_account,omitempty"`
	SCEPPerSource    *RateLimit `json:"scep_per_source,omitempty"`
	OCSPPerSource    *RateLimit `json:"ocsp_per_source,omitempty"`
	// HealthPerSource limits the local API's unauthenticated health check.
	HealthPerSource *RateLimit `json:"health_per_source,omitempty"`
	// AgentLogonPerAgent limits the logon certificates a sign-on server (an enrollment agent
	// authenticated by its certificate) asks the API for, per agent account.
	AgentLogonPerAgent *RateLimit `json:"agent_logon_per_agent,omitempty"`
	// Password stops password guessing before the domain locks the account out.
	Password *PasswordLimits `json:"password,omitempty"`
}

// RateLimit is a token bucket: Burst requests at once, refilled at PerMinute.
type RateLimit struct {
	PerMinute float64 `json:"per_minute"`
	Burst     int     `json:"burst"`
}

// PasswordLimits say how many wrong passwords for one account the password endpoints pass to
// the domain controller.
type PasswordLimits struct {
	// LockoutMargin is how many failures below the domain's lockoutThreshold the appliance
	// stops: it passes at most threshold-margin wrong passwords in the domain's
	// lockoutObservationWindow (at least 1, and never the threshold itself), leaving the rest
	// to the user at a workstation.
	LockoutMargin int `json:"lockout_margin,omitempty"`
	// NoLockoutCap is the limit where the domain locks no account out (threshold 0), per
	// NoLockoutWindow (a Go duration).
	NoLockoutCap    int    `json:"no_lockout_cap,omitempty"`
	NoLockoutWindow string `json:"no_lockout_window,omitempty"`
	// PolicyRefresh is how often the domain's lockout policy is read again (a Go duration).
	PolicyRefresh string `json:"policy_refresh,omitempty"`
}

// The default limits.
var (
	DefaultEnrollPerSource  = RateLimit{PerMinute: 6000, Burst: 10000}
	DefaultEnrollPerAccount = RateLimit{PerMinute: 30, Burst: 60}
	DefaultSCEPPerSource    = RateLimit{PerMinute: 1200, Burst: 2000}
	DefaultOCSPPerSource    = RateLimit{PerMinute: 6000, Burst: 10000}
	DefaultHealthPerSource  = RateLimit{PerMinute: 120, Burst: 60}
	// A sign-on server asks for one certificate per user logon: a morning's logon storm.
	DefaultAgentLogonPerAgent = RateLimit{PerMinute: 1200, Burst: 2000}
	DefaultPasswordLimits     = PasswordLimits{LockoutMargin: 2, NoLockoutCap: 10, NoLockoutWindow: "30m", PolicyRefresh: "15m"}
)

// LimitsOrDefault is l with every missing field set to its default.
func (c *Config) LimitsOrDefault() Limits {
	var l Limits
	if c.Limits != nil {
		l = *c.Limits
	}
	or := func(r *RateLimit, def RateLimit) *RateLimit {
		if r == nil {
			return &def
		}
		return r
	}
	l.EnrollPerSource = or(l.EnrollPerSource, DefaultEnrollPerSource)
	l.EnrollPerAccount = or(l.EnrollPerAccount, DefaultEnrollPerAccount)
	l.SCEPPerSource = or(l.SCEPPerSource, DefaultSCEPPerSource)
	l.OCSPPerSource = or(l.OCSPPerSource, DefaultOCSPPerSource)
	l.HealthPerSource = or(l.HealthPerSource, DefaultHealthPerSource)
	l.AgentLogonPerAgent = or(l.AgentLogonPerAgent, DefaultAgentLogonPerAgent)
	p := DefaultPasswordLimits
	if l.Password != nil {
		if l.Password.LockoutMargin != 0 {
			p.LockoutMargin = l.Password.LockoutMargin
		}
		if l.Password.NoLockoutCap != 0 {
			p.NoLockoutCap = l.Password.NoLockoutCap
		}
		if l.Password.NoLockoutWindow != "" {
			p.NoLockoutWindow = l.Password.NoLockoutWindow
		}
		if l.Password.PolicyRefresh != "" {
			p.PolicyRefresh = l.Password.PolicyRefresh
		}
	}
	l.Password = &p
	return l
}

// Duration parses a duration of the password limits that Validate has checked.
func (p *PasswordLimits) Duration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// validateLimits checks the limits and the trusted proxies.
func (c *Config) validateLimits() error {
	for i, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err := netip.ParseAddr(p); err != nil {
				return fmt.Errorf("trusted_proxies[%d] %q: want an address or a CIDR prefix (192.0.2.0/24)", i, p)
			}
		}
	}
	if c.Limits == nil {
		return nil
	}
	l := c.LimitsOrDefault()
	for name, r := range map[string]*RateLimit{"enroll_per_source": l.EnrollPerSource, "enroll_per_account": l.EnrollPerAccount,
		"scep_per_source": l.SCEPPerSource, "ocsp_per_source": l.OCSPPerSource, "health_per_source": l.HealthPerSource,
		"agent_logon_per_agent": l.AgentLogonPerAgent} {
		if r.PerMinute <= 0 || r.Burst < 1 {
			return fmt.Errorf("limits.%s: per_minute must be positive and burst at least 1", name)
		}
	}
	p := l.Password
	if p.LockoutMargin < 1 {
		return errors.New("limits.password.lockout_margin: at least 1 (the domain's own threshold must never be reached)")
	}
	if p.NoLockoutCap < 1 {
		return errors.New("limits.password.no_lockout_cap: at least 1")
	}
	for name, s := range map[string]string{"no_lockout_window": p.NoLockoutWindow, "policy_refresh": p.PolicyRefresh} {
		if d, err := time.ParseDuration(s); err != nil || d <= 0 {
			return fmt.Errorf("limits.password.%s %q: want a positive Go duration (30m)", name, s)
		}
	}
	return nil
}
