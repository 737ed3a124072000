# The seed's stack for benchmark 6: a Sidekiq 6.4 job (Debian's ruby-sidekiq, ruby-mail) that sends the
# confirmation mail, text + HTML, rendered from ERB copies of the project's templates, to the sink.
#
#   REDIS_URL=redis://127.0.0.1:PORT/2 MAIL_PORT=... SIDEKIQ_MAIL_TEMPLATES=dir \
#     sidekiq -r ./bench/sidekiq/mailer.rb -c 25 -q mailers
#   ruby bench/sidekiq/mailer.rb TO SUBJECT SENDER EMAIL CONFIRM_URL MESSAGE_ID   (prints the mail it would send)

require "erb"
require "mail"
require "sidekiq"

# Debian pairs sidekiq 6.4 with redis-rb 4.8, which warns on stderr at every fetch (BRPOP's
# positional timeout): a cost of that pairing, not of Sidekiq, so it is silenced.
Redis.silence_deprecations = true

# The templates are written by bench/sidekiq_side.py from the project's own, so both sides send the same mail.
TEMPLATES = ENV.fetch("SIDEKIQ_MAIL_TEMPLATES")
TEXT = ERB.new(File.read(File.join(TEMPLATES, "confirm.text.erb")))
HTML = ERB.new(File.read(File.join(TEMPLATES, "confirm.html.erb")))

# ActionMailer's default with Sidekiq: Mail's SMTP delivery, a new connection per mail.
Mail.defaults do
  delivery_method :smtp, address: "127.0.0.1", port: Integer(ENV.fetch("MAIL_PORT", "25")),
                         domain: "localhost", enable_starttls_auto: false
end

# Build the multipart confirmation mail (what ActionMailer renders from confirm.text.erb and confirm.html.erb).
def confirmation_mail(to, subject, sender, email, confirm_url, message_id)
  text = TEXT.result(binding)
  html = HTML.result(binding)
  mail = Mail.new
  mail.from = sender
  mail.to = to
  mail.subject = subject
  mail.message_id = message_id
  mail.text_part = Mail::Part.new { content_type "text/plain; charset=UTF-8"; body text }
  mail.html_part = Mail::Part.new { content_type "text/html; charset=UTF-8"; body html }
  mail
end

# The job on the `mailers` queue, as the seed's config/sidekiq.yml names it.
class ConfirmationMailJob
  include Sidekiq::Worker
  sidekiq_options queue: "mailers"

  # Send one confirmation mail.
  def perform(to, subject, sender, email, confirm_url, message_id)
    confirmation_mail(to, subject, sender, email, confirm_url, message_id).deliver!
  end
end

puts confirmation_mail(*ARGV).encoded if $PROGRAM_NAME == __FILE__
