<?php
// A full GLPI notification through PHPMailer 6 (GLPI 9.5/10) or Symfony Mailer (GLPI 11), for the
// end-to-end byte comparison: an explicit Message-ID, a UTF-8 body line, a binary attachment and
// a Bcc-only recipient (PHPMailer names it in RCPT only; Symfony Mailer too, and strips the Bcc
// header from what it sends). Both are set up as GLPI's GLPIMailer does (see phpmailer.php and
// symfony.php): no encryption towards authbridge, a login with the local password.
//   php rich.php LIB HOST PORT USER PASSWORD FROM TO BCC SUBJECT BODY MESSAGE-ID ATTACHMENT
// LIB: phpmailer | symfony. BODY may hold line feeds and UTF-8. MESSAGE-ID is without <>.
// Prints "RESULT ok" (exit 0) or "RESULT refused <error>" (exit 3); the SMTP dialogue to stderr.
[, $lib, $host, $port, $user, $password, $from, $to, $bcc, $subject, $body, $messageId, $attachment] = $argv;

if ($lib === 'phpmailer') {
    require '/usr/share/php/libphp-phpmailer/autoload.php';
    $mail = new PHPMailer\PHPMailer\PHPMailer(true);
    $mail->WordWrap = 80;
    $mail->CharSet = 'utf-8';
    $mail->isSMTP();
    $mail->Host = $host . ':' . $port;
    $mail->SMTPAuth = true;
    $mail->Username = $user;
    $mail->Password = $password;
    $mail->Timeout = 30;
    $mail->SMTPSecure = '';
    $mail->SMTPAutoTLS = false;
    $mail->SMTPDebug = PHPMailer\PHPMailer\SMTP::DEBUG_SERVER;
    $mail->Debugoutput = function ($str, $level) {
        fwrite(STDERR, rtrim($str) . "\n");
    };
    $mail->setFrom($from);
    $mail->Sender = $from;
    $mail->addAddress($to);
    $mail->addBCC($bcc);
    $mail->Subject = $subject;
    $mail->Body = $body;
    $mail->MessageID = '<' . $messageId . '>';
    $mail->addAttachment($attachment, basename($attachment), 'base64', 'application/octet-stream');
    try {
        $mail->send();
        echo "RESULT ok\n";
        exit(0);
    } catch (PHPMailer\PHPMailer\Exception $e) {
        echo 'RESULT refused ' . $mail->ErrorInfo . "\n";
        exit(3);
    }
} elseif ($lib === 'symfony') {
    require '/usr/share/php/Symfony/Component/Mailer/autoload.php';
    $dsn = sprintf('smtp://%s:%s@%s:%s', rawurlencode($user), rawurlencode($password), $host, $port);
    $transport = Symfony\Component\Mailer\Transport::fromDsn($dsn);
    if (method_exists($transport, 'getStream')) {
        $transport->getStream()->setTimeout(10);
    }
    $email = (new Symfony\Component\Mime\Email())
        ->from($from)->to($to)->bcc($bcc)->subject($subject)->text($body)
        ->attachFromPath($attachment, basename($attachment), 'application/octet-stream');
    $email->getHeaders()->addIdHeader('Message-ID', $messageId);
    try {
        $sent = $transport->send($email);
        fwrite(STDERR, $sent->getDebug());
        echo "RESULT ok\n";
        exit(0);
    } catch (Symfony\Component\Mailer\Exception\TransportExceptionInterface $e) {
        fwrite(STDERR, $e->getDebug());
        echo 'RESULT refused ' . str_replace("\n", ' ', $e->getMessage()) . "\n";
        exit(3);
    }
}
fwrite(STDERR, "unknown library $lib\n");
exit(2);
