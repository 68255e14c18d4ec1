//! The SMS providers' settings: which providers a worker may use, in which order
//! (`SMS_PROVIDERS`), which numbers each serves (`<NAME>_COUNTRIES`), and each one's
//! endpoint and credentials. A missing required value stops start-up naming it.

use secrecy::SecretString;

use super::{
    ReceiptSettings,
    vars::{ConfigError, Vars, invalid},
};
use crate::names::text_enum;

text_enum! {
    /// The SMS providers (`SMS_PROVIDERS`); also the name recorded in `sms_deliveries.provider`
    /// and `sms_attempts.provider`.
    pub enum ProviderName {
        /// Dev only: the code goes to the worker's log.
        Log = "log",
        /// Ronglian Cloud Communications (容联云通讯).
        Ccp = "ccp",
        /// Alibaba Cloud SMS (Dysmsapi).
        Aliyun = "aliyun",
        /// Tencent Cloud SMS.
        Tencent = "tencent",
        /// Twilio Programmable Messaging.
        Twilio = "twilio",
    }
}

/// The calling codes a provider serves (`<NAME>_COUNTRIES`): a list such as `86,852`, or `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Countries {
    /// Every number.
    Any,
    /// Numbers with one of these calling codes.
    Codes(Vec<u16>),
}

impl Countries {
    /// Whether a number with calling code `code` is served.
    pub fn serves(&self, code: u16) -> bool {
        match self {
            Countries::Any => true,
            Countries::Codes(codes) => codes.contains(&code),
        }
    }

    pub(super) fn parse(var: &'static str, raw: &str) -> Result<Self, ConfigError> {
        if raw.trim() == "*" {
            return Ok(Countries::Any);
        }
        let mut codes = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.trim_start_matches('+').parse::<u16>() {
                Ok(code @ 1..=999) => codes.push(code),
                _ => return Err(invalid(var, format!("{part:?} is not a calling code (1-999) or *"))),
            }
        }
        if codes.is_empty() {
            return Err(invalid(var, "needs at least one calling code, or *".into()));
        }
        Ok(Countries::Codes(codes))
    }
}

/// One provider a worker may send through.
#[derive(Clone, Debug)]
pub enum ProviderSettings {
    /// Dev only: writes the code to the worker's log instead of sending it.
    Log(LogSettings),
    /// Ronglian Cloud Communications (容联云通讯) template SMS.
    Ccp(CcpSettings),
    /// Alibaba Cloud Dysmsapi SendSms.
    Aliyun(AliyunSettings),
    /// Tencent Cloud SMS SendSms (API 3.0, 2021-01-11).
    Tencent(TencentSettings),
    /// Twilio Messages.json.
    Twilio(TwilioSettings),
}

impl ProviderSettings {
    /// The provider's name.
    pub fn name(&self) -> ProviderName {
        match self {
            Self::Log(_) => ProviderName::Log,
            Self::Ccp(_) => ProviderName::Ccp,
            Self::Aliyun(_) => ProviderName::Aliyun,
            Self::Tencent(_) => ProviderName::Tencent,
            Self::Twilio(_) => ProviderName::Twilio,
        }
    }

    /// The numbers it serves.
    pub fn countries(&self) -> &Countries {
        match self {
            Self::Log(s) => &s.countries,
            Self::Ccp(s) => &s.countries,
            Self::Aliyun(s) => &s.countries,
            Self::Tencent(s) => &s.countries,
            Self::Twilio(s) => &s.countries,
        }
    }

    /// The variable of its endpoint and the endpoint (`None` for the log provider, which
    /// has none).
    pub fn base_url(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Log(_) => None,
            Self::Ccp(s) => Some(("CCP_BASE_URL", &s.base_url)),
            Self::Aliyun(s) => Some(("ALIYUN_BASE_URL", &s.base_url)),
            Self::Tencent(s) => Some(("TENCENT_BASE_URL", &s.base_url)),
            Self::Twilio(s) => Some(("TWILIO_BASE_URL", &s.base_url)),
        }
    }

    /// The template it sends (recorded as `sms_deliveries.template_id`): the provider's
    /// template id or code, `text` for Twilio (whose message is `SMS_TEXT_TEMPLATE`), `1` for
    /// the log provider.
    pub fn template_id(&self) -> &str {
        match self {
            Self::Log(_) => "1",
            Self::Ccp(s) => &s.template_id,
            Self::Aliyun(s) => &s.template_code,
            Self::Tencent(s) => &s.template_id,
            Self::Twilio(_) => "text",
        }
    }
}

/// The dev `log` provider.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// `LOG_COUNTRIES` (`*`).
    pub countries: Countries,
}

/// Credentials and endpoint of the Ronglian (CCP) REST API.
#[derive(Clone, Debug)]
pub struct CcpSettings {
    /// `CCP_BASE_URL`, scheme + host + port, no trailing slash.
    pub base_url: String,
    /// `CCP_ACCOUNT_SID`.
    pub account_sid: String,
    /// `CCP_AUTH_TOKEN`: never logged.
    pub auth_token: SecretString,
    /// `CCP_APP_ID`.
    pub app_id: String,
    /// `CCP_TEMPLATE_ID` (`1`, the provider's test template).
    pub template_id: String,
    /// `CCP_COUNTRIES` (`86`).
    pub countries: Countries,
}

/// Credentials and endpoint of Alibaba Cloud Dysmsapi.
#[derive(Clone, Debug)]
pub struct AliyunSettings {
    /// `ALIYUN_BASE_URL` (`https://dysmsapi.aliyuncs.com`), no trailing slash.
    pub base_url: String,
    /// `ALIYUN_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `ALIYUN_ACCESS_KEY_SECRET`: never logged.
    pub access_key_secret: SecretString,
    /// `ALIYUN_SIGN_NAME`: the approved signature (签名).
    pub sign_name: String,
    /// `ALIYUN_TEMPLATE_CODE`, e.g. `SMS_15305000`: a template with a `${code}` variable.
    pub template_code: String,
    /// `ALIYUN_COUNTRIES` (`86`).
    pub countries: Countries,
}

/// Credentials and endpoint of Tencent Cloud SMS.
#[derive(Clone, Debug)]
pub struct TencentSettings {
    /// `TENCENT_BASE_URL` (`https://sms.tencentcloudapi.com`), no trailing slash.
    pub base_url: String,
    /// `TENCENT_SECRET_ID`.
    pub secret_id: String,
    /// `TENCENT_SECRET_KEY`: never logged.
    pub secret_key: SecretString,
    /// `TENCENT_SMS_SDK_APP_ID`, e.g. `1400006666`.
    pub sms_sdk_app_id: String,
    /// `TENCENT_SIGN_NAME`.
    pub sign_name: String,
    /// `TENCENT_TEMPLATE_ID`: a template with `{1}` the code and `{2}` the minutes.
    pub template_id: String,
    /// `TENCENT_REGION` (`ap-guangzhou`).
    pub region: String,
    /// `TENCENT_COUNTRIES` (`86`).
    pub countries: Countries,
}

/// Who a Twilio message is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TwilioSender {
    /// `TWILIO_FROM`: an E.164 number, short code or alphanumeric sender id.
    From(String),
    /// `TWILIO_MESSAGING_SERVICE_SID` (`MG…`).
    MessagingService(String),
}

/// Credentials and endpoint of Twilio Programmable Messaging.
#[derive(Clone, Debug)]
pub struct TwilioSettings {
    /// `TWILIO_BASE_URL` (`https://api.twilio.com`), no trailing slash.
    pub base_url: String,
    /// `TWILIO_ACCOUNT_SID` (`AC…`).
    pub account_sid: String,
    /// `TWILIO_AUTH_TOKEN`: never logged.
    pub auth_token: SecretString,
    /// `TWILIO_FROM` or `TWILIO_MESSAGING_SERVICE_SID`.
    pub sender: TwilioSender,
    /// `SMS_TEXT_TEMPLATE`: the message, with `{code}` and `{minutes}`.
    pub text_template: String,
    /// `RECEIPT_BASE_URL` + `/receipts/twilio`, sent as `StatusCallback` when set.
    pub status_callback: Option<String>,
    /// `TWILIO_COUNTRIES` (`*`).
    pub countries: Countries,
}

/// The default of `SMS_TEXT_TEMPLATE`.
pub const DEFAULT_TEXT_TEMPLATE: &str = "Your verification code is {code}. It expires in {minutes} minutes.";

/// Reads `SMS_PROVIDERS` (or the one-provider `SMS_PROVIDER`; `log` when neither is set) and
/// the settings of each provider it names; also returns which of the two variables it read.
/// `receipts` gives Twilio its `StatusCallback`.
pub(super) fn parse(
    vars: &Vars<'_>,
    receipts: &ReceiptSettings,
) -> Result<(&'static str, Vec<ProviderSettings>), ConfigError> {
    let (var, list) = match (vars.get("SMS_PROVIDERS"), vars.get("SMS_PROVIDER")) {
        (Some(list), _) => ("SMS_PROVIDERS", list),
        (None, Some(one)) => ("SMS_PROVIDER", one),
        (None, None) => ("SMS_PROVIDERS", "log".to_owned()),
    };
    let mut providers: Vec<ProviderSettings> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name: ProviderName = part.parse().map_err(|e| invalid(var, format!("{part:?}: {e}")))?;
        if providers.iter().any(|p| p.name() == name) {
            return Err(invalid(var, format!("{name} is listed twice")));
        }
        providers.push(one(vars, name, receipts)?);
    }
    if providers.is_empty() {
        return Err(invalid(var, "names no provider".into()));
    }
    Ok((var, providers))
}

fn one(vars: &Vars<'_>, name: ProviderName, receipts: &ReceiptSettings) -> Result<ProviderSettings, ConfigError> {
    let why = format!("required when SMS_PROVIDERS has {name}");
    let required = |var: &'static str| vars.required(var, &why);
    let secret = |var: &'static str| required(var).map(SecretString::from);
    let countries = |var: &'static str, default: &str| Countries::parse(var, &vars.str(var, default));
    Ok(match name {
        ProviderName::Log => ProviderSettings::Log(LogSettings { countries: countries("LOG_COUNTRIES", "*")? }),
        ProviderName::Ccp => ProviderSettings::Ccp(CcpSettings {
            base_url: vars.url("CCP_BASE_URL", "https://app.cloopen.com:8883")?,
            account_sid: required("CCP_ACCOUNT_SID")?,
            auth_token: secret("CCP_AUTH_TOKEN")?,
            app_id: required("CCP_APP_ID")?,
            template_id: vars.str("CCP_TEMPLATE_ID", "1"),
            countries: countries("CCP_COUNTRIES", "86")?,
        }),
        ProviderName::Aliyun => ProviderSettings::Aliyun(AliyunSettings {
            base_url: vars.url("ALIYUN_BASE_URL", "https://dysmsapi.aliyuncs.com")?,
            access_key_id: required("ALIYUN_ACCESS_KEY_ID")?,
            access_key_secret: secret("ALIYUN_ACCESS_KEY_SECRET")?,
            sign_name: required("ALIYUN_SIGN_NAME")?,
            template_code: required("ALIYUN_TEMPLATE_CODE")?,
            countries: countries("ALIYUN_COUNTRIES", "86")?,
        }),
        ProviderName::Tencent => ProviderSettings::Tencent(TencentSettings {
            base_url: vars.url("TENCENT_BASE_URL", "https://sms.tencentcloudapi.com")?,
            secret_id: required("TENCENT_SECRET_ID")?,
            secret_key: secret("TENCENT_SECRET_KEY")?,
            sms_sdk_app_id: required("TENCENT_SMS_SDK_APP_ID")?,
            sign_name: required("TENCENT_SIGN_NAME")?,
            template_id: required("TENCENT_TEMPLATE_ID")?,
            region: vars.str("TENCENT_REGION", "ap-guangzhou"),
            countries: countries("TENCENT_COUNTRIES", "86")?,
        }),
        ProviderName::Twilio => ProviderSettings::Twilio(TwilioSettings {
            base_url: vars.url("TWILIO_BASE_URL", "https://api.twilio.com")?,
            account_sid: required("TWILIO_ACCOUNT_SID")?,
            auth_token: secret("TWILIO_AUTH_TOKEN")?,
            sender: match (vars.get("TWILIO_FROM"), vars.get("TWILIO_MESSAGING_SERVICE_SID")) {
                (Some(from), None) => TwilioSender::From(from),
                (None, Some(service)) => TwilioSender::MessagingService(service),
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "TWILIO_FROM",
                        "set TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(invalid("TWILIO_FROM", format!("{why} (or TWILIO_MESSAGING_SERVICE_SID)")));
                }
            },
            text_template: text_template(vars)?,
            status_callback: receipts.twilio_callback(),
            countries: countries("TWILIO_COUNTRIES", "*")?,
        }),
    })
}

/// `SMS_TEXT_TEMPLATE`: must contain `{code}`, or the message would not carry it.
fn text_template(vars: &Vars<'_>) -> Result<String, ConfigError> {
    let template = vars.str("SMS_TEXT_TEMPLATE", DEFAULT_TEXT_TEMPLATE);
    if template.contains("{code}") {
        Ok(template)
    } else {
        Err(invalid("SMS_TEXT_TEMPLATE", "must contain {code}".into()))
    }
}
