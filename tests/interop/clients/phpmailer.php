<?php
// PHPMailer 6 (Debian libphp-phpmailer) configured as GLPI 9.5/10's GLPIMailer does.
//   php phpmailer.php MODE HOST PORT USER PASSWORD FROM TO SUBJECT BODY
// MODE: smtp = GLPI "SMTP" (no encryption, SMTPAutoTLS off: never upgrades by itself)
//       tls  = GLPI "SMTP+TLS" (STARTTLS) with "check certificate" off
// Prints "RESULT ok" (exit 0) or "RESULT refused <ErrorInfo>" (exit 3); the SMTP dialogue
// (server replies) goes to stderr.
require '/usr/share/php/libphp-phpmailer/autoload.php';

use PHPMailer\PHPMailer\Exception;
use PHPMailer\PHPMailer\PHPMailer;
use PHPMailer\PHPMailer\SMTP;

[, $mode, $host, $port, $user, $password, $from, $to, $subject, $body] = $argv;

$mail = new PHPMailer(true);
$mail->WordWrap = 80;
$mail->CharSet = 'utf-8';
$mail->isSMTP();
$mail->Host = $host . ':' . $port;
$mail->SMTPAuth = true;
$mail->Username = $user;
$mail->Password = $password;
$mail->Timeout = 30;
$mail->SMTPDebug = SMTP::DEBUG_SERVER;
$mail->Debugoutput = function ($str, $level) {
    fwrite(STDERR, rtrim($str) . "\n");
};
if ($mode === 'smtp') {
    $mail->SMTPSecure = '';
    $mail->SMTPAutoTLS = false;
} elseif ($mode === 'tls') {
    $mail->SMTPSecure = PHPMailer::ENCRYPTION_STARTTLS;
    $mail->SMTPOptions = ['ssl' => [
        'verify_peer' => false,
        'verify_peer_name' => false,
        'allow_self_signed' => true,
    ]];
} else {
    fwrite(STDERR, "unknown mode $mode\n");
    exit(2);
}
$mail->setFrom($from);
$mail->Sender = $from;
$mail->addAddress($to);
$mail->Subject = $subject;
$mail->Body = $body;

try {
    $mail->send();
    echo "RESULT ok\n";
    exit(0);
} catch (Exception $e) {
    echo 'RESULT refused ' . $mail->ErrorInfo . "\n";
    exit(3);
}
