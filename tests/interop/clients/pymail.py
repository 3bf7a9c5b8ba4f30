#!/usr/bin/env python3
"""Python's standard mail clients (smtplib, imaplib, poplib) against authbridge.

  pymail.py smtp HOST PORT USER PASSWORD FROM TO SUBJECT BODY [--starttls]
  pymail.py imap HOST PORT USER PASSWORD [--starttls | --ssl]
  pymail.py pop3 HOST PORT USER PASSWORD [--stls | --ssl]
  pymail.py probe SMTP_PORT IMAP_STARTTLS_PORT IMAPS_PORT POP3S_PORT   (the upstreams, directly)

Readers print every message between "=== message N" lines. The last line is "RESULT ok"
(exit 0) or "RESULT refused <server reply>" (exit 3); anything else exits 1.
"""
import email.message
import imaplib
import poplib
import smtplib
import ssl
import sys


def insecure():
    # Like GLPI with "check certificate" off: the suite's listeners use a private CA.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def refused(why):
    print(f"RESULT refused {why}")
    sys.exit(3)


def smtp(host, port, user, password, sender, to, subject, body, *flags):
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP(host, int(port), timeout=30) as s:
        s.set_debuglevel(1)
        s.ehlo()
        if "--starttls" in flags:
            s.starttls(context=insecure())
            s.ehlo()
        try:
            s.login(user, password)
        except smtplib.SMTPAuthenticationError as e:
            refused(f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}")
        except smtplib.SMTPException as e:
            refused(str(e))
        s.send_message(msg)
    print("RESULT ok")


def imap(host, port, user, password, *flags):
    if "--ssl" in flags:
        m = imaplib.IMAP4_SSL(host, int(port), ssl_context=insecure(), timeout=30)
    else:
        m = imaplib.IMAP4(host, int(port), timeout=30)
        if "--starttls" in flags:
            m.starttls(ssl_context=insecure())
    try:
        m.login(user, password)
    except imaplib.IMAP4.error as e:
        refused(str(e))
    typ, _ = m.select("INBOX", readonly=True)
    assert typ == "OK", typ
    typ, data = m.search(None, "ALL")
    assert typ == "OK", typ
    for n in data[0].split():
        typ, parts = m.fetch(n, "(RFC822)")
        assert typ == "OK", typ
        raw = b"".join(p[1] for p in parts if isinstance(p, tuple))
        print(f"=== message {n.decode()}")
        print(raw.decode(errors="replace"))
    m.logout()
    print("RESULT ok")


def pop3(host, port, user, password, *flags):
    if "--ssl" in flags:
        p = poplib.POP3_SSL(host, int(port), context=insecure(), timeout=30)
    else:
        p = poplib.POP3(host, int(port), timeout=30)
        if "--stls" in flags:
            p.stls(context=insecure())
    try:
        p.user(user)
        p.pass_(password)
    except poplib.error_proto as e:
        refused(e.args[0].decode(errors="replace") if e.args else str(e))
    count, _ = p.stat()
    for n in range(1, count + 1):
        _, lines, _ = p.retr(n)
        print(f"=== message {n}")
        print(b"\r\n".join(lines).decode(errors="replace"))
    p.quit()
    print("RESULT ok")


def probe(smtp_port, imap_port, imaps_port, pop3s_port):
    """Check that the upstreams take OAuth2 from the mailbox users, as Exchange Online does.

    PLAIN and LOGIN are offered after TLS (Exchange Online's IMAP advertises AUTH=PLAIN and its
    SMTP AUTH LOGIN too) for the one relay user of the suite, a transactional provider's login;
    a password for a mailbox user is always refused.
    """
    problems = []
    with smtplib.SMTP("127.0.0.1", int(smtp_port), timeout=30) as s:
        s.ehlo()
        if s.has_extn("auth"):
            problems.append(f"Postfix offers AUTH before STARTTLS: {s.esmtp_features['auth']}")
        code, _ = s.mail("tickets@contoso.com")
        if code != 530:
            problems.append(f"Postfix took MAIL before STARTTLS and AUTH ({code})")
        s.rset()
        s.starttls(context=insecure())
        s.ehlo()
        mechs = sorted(s.esmtp_features.get("auth", "").split())
        print(f"postfix submission AUTH after STARTTLS: {mechs}")
        if mechs != ["LOGIN", "OAUTHBEARER", "PLAIN", "XOAUTH2"]:
            problems.append(f"Postfix AUTH mechanisms are {mechs}")
        code, resp = s.docmd("AUTH", "PLAIN AHRpY2tldHNAY29udG9zby5jb20AcGFzc3dvcmQ=")
        print(f"postfix AUTH PLAIN: {code} {resp.decode()}")
        if code == 235:
            problems.append("Postfix accepted AUTH PLAIN")
    m = imaplib.IMAP4("127.0.0.1", int(imap_port), timeout=30)
    print(f"dovecot IMAP (STARTTLS port) capabilities before TLS: {' '.join(m.capabilities)}")
    m.starttls(ssl_context=insecure())
    caps = m.capabilities
    m.logout()
    m = imaplib.IMAP4_SSL("127.0.0.1", int(imaps_port), ssl_context=insecure(), timeout=30)
    caps = m.capabilities
    print(f"dovecot IMAPS capabilities: {' '.join(caps)}")
    if "AUTH=XOAUTH2" not in caps:
        problems.append("Dovecot IMAP does not offer XOAUTH2")
    try:
        m.login("tickets@contoso.com", "password")
        problems.append("Dovecot IMAP accepted LOGIN with a password")
    except imaplib.IMAP4.error as e:
        print(f"dovecot IMAP LOGIN: {e}")
    m.logout()
    p = poplib.POP3_SSL("127.0.0.1", int(pop3s_port), context=insecure(), timeout=30)
    try:
        p.user("tickets@contoso.com")
        p.pass_("password")
        problems.append("Dovecot POP3 accepted USER/PASS")
    except poplib.error_proto as e:
        print(f"dovecot POP3 USER/PASS: {e}")
    if problems:
        refused("; ".join(problems))
    print("RESULT ok")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    try:
        {"smtp": smtp, "imap": imap, "pop3": pop3, "probe": probe}[cmd](*args)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - report any client-side failure as one line
        print(f"RESULT error {type(e).__name__}: {e}")
        sys.exit(1)
