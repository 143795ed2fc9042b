package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

func init() {
	commands["revoke"] = revokeCommand
	commands["crl"] = crlCommand
	commands["scep"] = scepCommand
}

func revokeCommand(fs *flag.FlagSet) runner {
	var reason string
	fs.StringVar(&reason, "reason", "", "why: "+strings.Join(apiclient.ReasonNames(), ", ")+" (required)")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 1 || reason == "" {
			return fmt.Errorf("%w: aectl revoke SERIAL --reason REASON", errUsage)
		}
		c, err := e.cl.Revoke(ctx, e.args[0], reason)
		if err != nil {
			return err
		}
		return e.print(c, func(w io.Writer) {
			at := ""
			if c.RevokedAt != nil {
				at = c.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "Revoked:\t%s (%s) at %s\nSubject:\t%s\nAccount:\t%s\n", c.Serial, apiclient.ReasonName(c.RevocationReason), at, c.Subject, c.Account)
		})
	}
}

func crlCommand(fs *flag.FlagSet) runner {
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 1 || e.args[0] != "publish" {
			return fmt.Errorf("%w: aectl crl publish", errUsage)
		}
		info, err := e.cl.PublishCRL(ctx)
		if err != nil {
			return err
		}
		return e.print(info, func(w io.Writer) {
			fmt.Fprintf(w, "CRL:\tnumber %d, %d entries, %d bytes, next update %s (%s)\n", info.Number, info.Entries, info.Bytes,
				info.NextUpdate.Format(time.RFC3339), info.Took)
			fmt.Fprintf(w, "Delta CRL:\tnumber %d, %d entries\n", info.DeltaNumber, info.DeltaEntries)
			if info.URL != "" {
				fmt.Fprintf(w, "URL:\t%s\n", info.URL)
			}
		})
	}
}

const scepUsage = `aectl scep profiles
aectl scep profile add NAME --template T [--account A] (--static-challenge-file F | --one-time | --mdm NAME) [--allow-des]
aectl scep challenge --profile P [--subject S] [--account A] [--ttl 1h]`

func scepCommand(fs *flag.FlagSet) runner {
	var spec apiclient.SCEPProfileSpec
	var challengeFile, profile, subject, ttl string
	fs.StringVar(&spec.Template, "template", "", "profile add: the directory template")
	fs.StringVar(&spec.Account, "account", "", "the account certificates are for")
	fs.StringVar(&challengeFile, "static-challenge-file", "", "profile add: file holding the static challenge password")
	fs.BoolVar(&spec.OneTime, "one-time", false, "profile add: one-time challenges (aectl scep challenge)")
	fs.StringVar(&spec.MDM, "mdm", "", "profile add: a registered MDM issues and validates the challenges (aectl mdm webhooks)")
	fs.BoolVar(&spec.AllowDES, "allow-des", false, "profile add: also accept requests encrypted with DES or 3DES, for legacy devices that can do nothing else (an eavesdropper can read them, challenge included)")
	fs.StringVar(&profile, "profile", "", "challenge: the profile")
	fs.StringVar(&subject, "subject", "", "challenge: subject or SAN value the request must carry")
	fs.StringVar(&ttl, "ttl", "", "challenge: lifetime (default 1h)")
	return func(ctx context.Context, e *env) error {
		switch {
		case len(e.args) == 1 && e.args[0] == "profiles":
			if err := refuseFlags(fs, "scep profiles", "template", "account", "static-challenge-file", "one-time", "allow-des", "mdm", "profile", "subject", "ttl"); err != nil {
				return err
			}
			ps, err := e.cl.SCEPProfiles(ctx)
			if err != nil {
				return err
			}
			return e.print(ps, func(w io.Writer) {
				fmt.Fprintln(w, "PROFILE\tTEMPLATE\tACCOUNT\tCHALLENGE\tCREATED\tWARNING")
				for _, p := range ps {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Template, p.Account, p.Mode, p.Created.Format(time.RFC3339), desWarning(p))
				}
			})
		case len(e.args) == 3 && e.args[0] == "profile" && e.args[1] == "add":
			if err := refuseFlags(fs, "scep profile add", "profile", "subject", "ttl"); err != nil {
				return err
			}
			spec.Name = e.args[2]
			if challengeFile != "" {
				b, err := os.ReadFile(challengeFile)
				if err != nil {
					return fmt.Errorf("--static-challenge-file: %w", err)
				}
				spec.StaticChallenge = strings.TrimRight(string(b), "\r\n")
			}
			p, err := e.cl.AddSCEPProfile(ctx, spec)
			if err != nil {
				return err
			}
			return e.print(p, func(w io.Writer) { printProfile(w, p) })
		case len(e.args) == 1 && e.args[0] == "challenge":
			if profile == "" {
				return fmt.Errorf("%w: --profile is required\n%s", errUsage, scepUsage)
			}
			if err := refuseFlags(fs, "scep challenge", "template", "static-challenge-file", "one-time", "allow-des", "mdm"); err != nil {
				return err
			}
			c, err := e.cl.SCEPChallenge(ctx, apiclient.ChallengeRequest{Profile: profile, Subject: subject, Account: spec.Account, TTL: ttl})
			if err != nil {
				return err
			}
			return e.print(c, func(w io.Writer) { fmt.Fprintln(w, c.Challenge) })
		}
		return fmt.Errorf("%w:\n%s", errUsage, scepUsage)
	}
}

func printProfile(w io.Writer, p apiclient.SCEPProfile) {
	fmt.Fprintf(w, "Profile:\t%s\nTemplate:\t%s\nAccount:\t%s\nChallenge:\t%s\n", p.Name, p.Template, p.Account, p.Mode)
	if p.MDM != "" {
		fmt.Fprintf(w, "Validated by:\tMDM %s\n", p.MDM)
	}
	if p.AllowDES {
		fmt.Fprintf(w, "WARNING:\t%s\n", desWarning(p))
	}
}

// desWarning is what aectl says of a profile that accepts DES.
func desWarning(p apiclient.SCEPProfile) string {
	var w []string
	if p.AllowDES {
		w = append(w, "accepts DES/3DES: requests and challenges readable by eavesdroppers")
	}
	if p.Account != "" && p.AccountSID == "" {
		w = append(w, "account bound by name, not SID (made by an older version): re-create the profile")
	}
	if len(w) == 0 {
		return "-"
	}
	return strings.Join(w, "; ")
}
