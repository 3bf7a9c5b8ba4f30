//! The admin page's HTML, rendered on the server from a [`Snapshot`]: every value is escaped
//! ([`esc`]); no inline script or style (the CSP forbids both) — behaviour comes from
//! `/static/admin.js`, looks from `/static/admin.css`. Forms that change state are POSTs that
//! carry the session's CSRF token.

use std::fmt::Write;

use super::snapshot::{AccountView, Snapshot};

/// HTML-escape text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/static/admin.css\">\
         <script src=\"/static/admin.js\" defer></script></head>\n<body>\n{body}\n</body></html>\n",
        esc(title)
    )
}

fn field(out: &mut String, label: &str, key: &str, value: Option<&str>) {
    let _ = write!(
        out,
        "<dt>{}</dt><dd data-field=\"{key}\">{}</dd>",
        esc(label),
        esc(value.unwrap_or("—"))
    );
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

fn account_card(out: &mut String, a: &AccountView, csrf: &str, authorise_note: Option<&str>) {
    let _ = write!(
        out,
        "<section class=\"card account\" data-account=\"{}\"><h3>{} <span class=\"mailbox\">{}</span></h3>\
         <p class=\"state tone-{}\" data-field=\"state\">{}</p><dl>",
        esc(&a.name),
        esc(&a.name),
        esc(&a.mailbox),
        a.tone,
        esc(&a.state)
    );
    field(out, "Provider", "provider", Some(&a.provider));
    field(out, "Flow", "flow", Some(a.flow));
    field(
        out,
        "Access token expires",
        "access_token_expires",
        a.access_token_expires.as_deref(),
    );
    field(
        out,
        "Last refresh",
        "last_refresh",
        a.last_refresh.as_deref(),
    );
    field(
        out,
        "Refresh token age",
        "refresh_token_age",
        a.refresh_token_age.as_deref(),
    );
    field(
        out,
        "Last error and fix",
        "last_error",
        a.last_error.as_deref(),
    );
    field(
        out,
        "Sign-in from this page",
        "sign_in",
        a.sign_in.as_deref(),
    );
    out.push_str("</dl>");
    out.push_str("<div class=\"device\" data-field=\"device\">");
    if let Some(d) = &a.device {
        let _ = write!(
            out,
            "<p>Device code <strong class=\"code\">{}</strong> — open <a href=\"{}\" \
             target=\"_blank\" rel=\"noopener noreferrer\">{}</a>, enter the code and sign in as \
             {}. State: <span>{}</span>{}</p>",
            esc(&d.user_code),
            esc(&d.verification_uri),
            esc(&d.verification_uri),
            esc(&a.mailbox),
            esc(d.state),
            d.message
                .as_deref()
                .map(|m| format!(" — {}", esc(m)))
                .unwrap_or_default()
        );
    }
    out.push_str("</div>");
    if a.can_authorise || a.can_device_code {
        out.push_str("<div class=\"actions\">");
        if a.can_authorise {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/authorise\">{}{}<button type=\"submit\" \
                 class=\"primary\" name=\"go\" value=\"authorise\">Authorise</button></form>",
                hidden("account", &a.name),
                hidden("csrf", csrf)
            );
        }
        if a.can_device_code {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/device\">{}{}<button type=\"submit\">Use a device \
                 code</button></form>",
                hidden("account", &a.name),
                hidden("csrf", csrf)
            );
        }
        out.push_str("</div>");
        if let (true, Some(note)) = (a.can_authorise, authorise_note) {
            let _ = write!(out, "<p class=\"note\">{}</p>", esc(note));
        }
    }
    out.push_str("</section>\n");
}

/// The main page. `authorise_note`: why Authorise would not come back to this address, if so.
pub fn main_page(
    s: &Snapshot,
    csrf: &str,
    password: bool,
    notice: Option<&str>,
    authorise_note: Option<&str>,
) -> String {
    let mut b = String::with_capacity(8 * 1024);
    b.push_str("<header><h1>authbridge</h1>");
    if password {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/logout\" class=\"logout\">{}<button type=\"submit\">Log \
             out</button></form>",
            hidden("csrf", csrf)
        );
    }
    b.push_str("</header><main>");
    if let Some(n) = notice {
        let _ = write!(b, "<p class=\"notice\" role=\"status\">{}</p>", esc(n));
    }
    b.push_str("<h2>Accounts</h2>");
    for a in &s.accounts {
        account_card(&mut b, a, csrf, authorise_note);
    }
    if s.accounts.is_empty() {
        b.push_str("<p>No accounts are configured.</p>");
    }
    b.push_str(
        "<h2>Listeners</h2><div class=\"scroll\"><table class=\"listeners\"><thead><tr>\
         <th>Name</th><th>Protocol</th><th>Address</th><th>TLS</th><th>Sessions now</th>\
         <th>Logins ok (1 h)</th><th>Logins failed (1 h)</th></tr></thead><tbody>",
    );
    for l in &s.listeners {
        let _ = write!(
            b,
            "<tr data-listener=\"{}\"><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td>\
             <td data-field=\"sessions\">{}</td><td data-field=\"logins_ok\">{}</td>\
             <td data-field=\"logins_failed\">{}</td></tr>",
            esc(&l.name),
            esc(&l.name),
            esc(&l.protocol),
            if l.mode == "relay" { " (relay)" } else { "" },
            esc(&l.address),
            esc(l.tls),
            l.sessions,
            l.logins_ok,
            l.logins_failed
        );
    }
    b.push_str("</tbody></table></div>");
    let _ = write!(
        b,
        "<h2>Redirect URI</h2><p>Register <code class=\"redirect\">{}</code> as a redirect URI of \
         the app in Entra ID (App registrations → your app → Authentication → Add a platform → \
         Web) so that Authorise can come back here.</p>",
        esc(&s.redirect_uri)
    );
    let _ = write!(
        b,
        "</main><footer><p>Updated <span id=\"updated\">{}</span>. This page refreshes itself \
         every few seconds.</p></footer>",
        esc(&s.generated_at)
    );
    layout("authbridge admin", &b)
}

/// The password form.
pub fn login_page(csrf: &str, message: Option<&str>) -> String {
    let mut b = String::from("<header><h1>authbridge</h1></header><main class=\"narrow\">");
    if let Some(m) = message {
        let _ = write!(
            b,
            "<p class=\"notice tone-bad\" role=\"alert\">{}</p>",
            esc(m)
        );
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/login\" class=\"card\"><label for=\"password\">Admin \
         password</label><input type=\"password\" id=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required autofocus>{}<button type=\"submit\" \
         class=\"primary\">Log in</button></form></main>",
        hidden("csrf", csrf)
    );
    layout("authbridge admin — log in", &b)
}

/// After Authorise: the link to the identity provider's sign-in, which the page's script follows
/// at once. (A redirect would do, but the CSP's `form-action 'self'` forbids a form's response
/// to redirect to another origin, so the browser is sent there by a link instead.)
pub fn continue_page(account: &str, mailbox: &str, url: &str) -> String {
    let b = format!(
        "<header><h1>authbridge</h1></header><main class=\"narrow\"><p>Sign in as {} to \
         authorise account {}.</p><p><a id=\"continue\" data-auto=\"1\" class=\"button\" \
         href=\"{}\" rel=\"noreferrer\">Continue to the sign-in page</a></p><p><a href=\"/\">Back \
         to the admin page</a></p></main>",
        esc(mailbox),
        esc(account),
        esc(url)
    );
    layout("authbridge admin — sign in", &b)
}

/// A short page with a message and a link back to the admin page.
pub fn message_page(title: &str, message: &str, ok: bool) -> String {
    let b = format!(
        "<header><h1>authbridge</h1></header><main class=\"narrow\"><p class=\"notice tone-{}\" \
         role=\"status\" id=\"message\">{}</p><p><a id=\"back\" href=\"/\">Back to the admin \
         page</a></p></main>",
        if ok { "ok" } else { "bad" },
        esc(message)
    );
    layout(title, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let p = message_page("t", "<script>alert(1)</script>", false);
        assert!(!p.contains("<script>alert") && p.contains("&lt;script&gt;"));
        assert!(!p.contains("<style") && !p.contains(" style=") && !p.contains(" on"));
    }
}
