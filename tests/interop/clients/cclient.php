<?php
// PHP's c-client (Debian php-imap; GLPI <= 9.4 and some plugins) as a mail collector:
//   php cclient.php imap|pop3 notls|ssl HOST PORT USER PASSWORD
// Opens {HOST:PORT/imap|pop3/notls|ssl/novalidate-cert}INBOX as GLPI 9.4's MailCollector does
// (imap_open with one attempt), reads every message's header and body, closes. c-client's
// notices (imap_errors(), imap_alerts()) are printed; a "SECURITY PROBLEM" among them (c-client's
// warning about a plaintext server that advertises AUTH=PLAIN) fails the case.
// Every message (header + text) goes to stdout between "=== message N" lines; the result is the
// last line: "RESULT ok" (exit 0), "RESULT refused <why>" (exit 3) or "RESULT error <why>" (exit 1).

[, $proto, $tls, $host, $port, $user, $password] = $argv;

if (!function_exists('imap_open')) {
    echo "RESULT error the php-imap extension is not loaded\n";
    exit(1);
}
imap_timeout(IMAP_OPENTIMEOUT, 30);
imap_timeout(IMAP_READTIMEOUT, 30);
$flags = $tls === 'ssl' ? '/ssl/novalidate-cert' : '/notls';
$mailbox = '{' . $host . ':' . $port . '/' . ($proto === 'pop3' ? 'pop3' : 'imap') . $flags . '}INBOX';
echo "mailbox $mailbox\n";
$stream = @imap_open($mailbox, $user, $password, 0, 1);

$notices = array_merge(imap_errors() ?: [], imap_alerts() ?: []);
foreach ($notices as $n) {
    echo "NOTICE $n\n";
}
if (!$stream) {
    echo 'RESULT refused ' . ($notices ? end($notices) : 'imap_open failed') . "\n";
    exit(3);
}
$count = imap_num_msg($stream);
for ($i = 1; $i <= $count; $i++) {
    echo "=== message $i\n";
    echo imap_fetchheader($stream, $i);
    echo imap_body($stream, $i, FT_PEEK);
    echo "\n";
}
imap_close($stream);
$notices = array_merge($notices, imap_errors() ?: [], imap_alerts() ?: []);
foreach ($notices as $n) {
    if (stripos($n, 'SECURITY PROBLEM') !== false) {
        echo "RESULT error c-client logged: $n\n";
        exit(1);
    }
}
echo "RESULT ok\n";
