//! The requests Fides builds from the eleven connector files in `config/fides/`, written
//! out literally (FIDES-BEHAVIOUR.md §4, and its §2 rules for the ones §4 abbreviates).
//! Secrets: client_id `client`, client_secret `secret`, redirect_uri
//! `https://fides.example/api/v1/oauth/callback`, state `STATE123`, code `CODE456`,
//! refresh_token `REFRESH789`, each file's defaults, and `domain` = `{D}` where the file
//! has no default (Salesforce, Auth0). The strings were produced with Python's
//! `urllib.parse.urlencode` and `requests`, the libraries Fides uses; they are not computed
//! by tokenwarden.

/// The secrets of the golden cases.
pub const CLIENT_ID: &str = "client";
pub const CLIENT_SECRET: &str = "secret";
pub const REDIRECT_URI: &str = "https://fides.example/api/v1/oauth/callback";
pub const STATE: &str = "STATE123";
pub const CODE: &str = "CODE456";
pub const REFRESH_TOKEN: &str = "REFRESH789";
/// `base64("client:secret")`.
pub const BASIC: &str = "Basic Y2xpZW50OnNlY3JldA==";

const R: &str = "https%3A%2F%2Ffides.example%2Fapi%2Fv1%2Foauth%2Fcallback";
const FORM: &str = "application/x-www-form-urlencoded";

/// One connector file.
#[derive(Clone, Copy, Debug)]
pub struct Connector {
    /// The connection key in `config/fides-example.yaml` and the tests.
    pub key: &'static str,
    /// The file in `config/fides/`.
    pub file: &'static str,
    pub authorization_code: bool,
    /// `domain` has no default in the file, so the tests must give one.
    pub needs_domain: bool,
    /// The file's `expires_in` (it wins over the token response's).
    pub expires_in: Option<u64>,
    /// The file has a `refresh_request`.
    pub has_refresh_request: bool,
}

pub const CONNECTORS: [Connector; 11] = [
    c(
        "adobe_sign",
        "adobe_sign_config.yml",
        true,
        false,
        None,
        true,
    ),
    c("auth0", "auth0_config.yml", false, true, None, true),
    c("domo", "domo_config.yml", false, false, None, false),
    c(
        "google_analytics",
        "google_analytics_config.yml",
        true,
        false,
        Some(3599),
        true,
    ),
    c(
        "microsoft_advertising",
        "microsoft_advertising_config.yml",
        true,
        false,
        Some(3600),
        true,
    ),
    c("outreach", "outreach_config.yml", true, false, None, true),
    c(
        "powerreviews",
        "powerreviews_config.yml",
        false,
        false,
        None,
        false,
    ),
    c(
        "salesforce",
        "salesforce_config.yml",
        true,
        true,
        Some(7200),
        true,
    ),
    c("snap", "snap_config.yml", true, false, None, true),
    c("unbounce", "unbounce_config.yml", true, false, None, true),
    c(
        "universal_analytics",
        "universal_analytics_config.yml",
        true,
        false,
        Some(3599),
        true,
    ),
];

const fn c(
    key: &'static str,
    file: &'static str,
    authorization_code: bool,
    needs_domain: bool,
    expires_in: Option<u64>,
    has_refresh_request: bool,
) -> Connector {
    Connector {
        key,
        file,
        authorization_code,
        needs_domain,
        expires_in,
        has_refresh_request,
    }
}

pub fn connector(key: &str) -> Connector {
    *CONNECTORS
        .iter()
        .find(|c| c.key == key)
        .unwrap_or_else(|| panic!("no connector {key}"))
}

/// A request as Fides sends it (the headers the config decides; library headers such as
/// User-Agent are not part of the contract).
#[derive(Clone, Debug, PartialEq)]
pub struct Expected {
    pub method: &'static str,
    /// `https://host/path?query`.
    pub url: String,
    pub content_type: &'static str,
    pub authorization: Option<&'static str>,
    /// The body bytes; empty for none (sent with `Content-Length: 0`).
    pub body: String,
}

impl Expected {
    /// `host[:port]` of the URL.
    pub fn authority(&self) -> &str {
        let rest = self.url.strip_prefix("https://").expect("https URL");
        rest.split('/').next().unwrap_or_default()
    }

    /// The request target: path and query.
    pub fn target(&self) -> &str {
        let rest = self.url.strip_prefix("https://").expect("https URL");
        &rest[rest.find('/').expect("a path")..]
    }
}

fn sub(text: &str, domain: &str) -> String {
    text.replace("{R}", R).replace("{D}", domain)
}

fn post(url: &str, content_type: &'static str, body: &str, domain: &str) -> Expected {
    Expected {
        method: "POST",
        url: sub(url, domain),
        content_type,
        authorization: None,
        body: sub(body, domain),
    }
}

/// The authorization URL (state `STATE123`); None for client-credentials connectors.
pub fn authorize_url(key: &str, domain: &str) -> Option<String> {
    let url = match key {
        "adobe_sign" => "https://secure.na3.adobesign.com/public/oauth/v2?client_id=client&redirect_uri={R}&response_type=code&scope=user_read%3Aaccount+user_write%3Aaccount+agreement_read%3Aaccount+agreement_write%3Aaccount&state=STATE123",
        "google_analytics" | "universal_analytics" => "https://accounts.google.com/o/oauth2/v2/auth?client_id=client&redirect_uri={R}&response_type=code&state=STATE123&prompt=consent&access_type=offline&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fanalytics.user.deletion",
        "microsoft_advertising" => "https://login.microsoftonline.com/consumers/oauth2/v2.0/authorize?client_id=client&redirect_uri={R}&response_type=code&scope=openid+profile+offline_access+https%3A%2F%2Fads.microsoft.com%2Fmsads.manage&state=STATE123",
        "outreach" => "https://api.outreach.io/oauth/authorize?client_id=client&redirect_uri={R}&response_type=code&scope=prospects.all+recipients.all+teams.all+roles.all+accounts.all+audits.all+callDispositions.all+callPurposes.all+calls.all+complianceRequests.all+contentCategories.all+contentCategoryMemberships.all+contentCategoryOwnerships.all+duties.all+emailAddresses.all+events.all+favorites.all+mailAliases.all+mailboxes.all+mailings.all+opportunities.all+opportunityProspectRoles.all+opportunityStages.all+personas.all+phoneNumbers.all+profiles.all+rulesets.all+sequenceStates.all+sequenceSteps.all+sequenceTemplates.all+sequences.all+snippets.all+stages.all+taskPriorities.all+tasks.all+templates.all+users.all+webhooks.all&state=STATE123",
        "salesforce" => "https://{D}/services/oauth2/authorize?client_id=client&redirect_uri={R}&response_type=code&state=STATE123",
        "snap" => "https://accounts.snapchat.com/login/oauth2/authorize?client_id=client&state=STATE123&redirect_uri={R}&response_type=code&scope=snapchat-marketing-api",
        "unbounce" => "https://api.unbounce.com/oauth/authorize?client_id=client&redirect_uri={R}&response_type=code&state=STATE123",
        "auth0" | "domo" | "powerreviews" => return None,
        other => panic!("no connector {other}"),
    };
    Some(sub(url, domain))
}

const CODE_FORM: &str = "client_id=client&client_secret=secret&code=CODE456&grant_type=authorization_code&redirect_uri={R}";
const REFRESH_FORM: &str =
    "client_id=client&client_secret=secret&grant_type=refresh_token&refresh_token=REFRESH789";
const REFRESH_FORM_WITH_REDIRECT: &str = "client_id=client&client_secret=secret&grant_type=refresh_token&redirect_uri={R}&refresh_token=REFRESH789";
const AUTH0_BODY: &str = "{\n  \"grant_type\": \"client_credentials\",\n  \"audience\": \"https://{D}/api/v2/\",\n  \"client_id\": \"client\",\n  \"client_secret\": \"secret\"\n}\n";

/// The token request (code `CODE456` for authorization code).
pub fn token(key: &str, domain: &str) -> Expected {
    let d = domain;
    match key {
        "adobe_sign" => post("https://api.na3.adobesign.com/oauth/v2/token", FORM, CODE_FORM, d),
        "auth0" => post("https://{D}/oauth/token", "application/json", AUTH0_BODY, d),
        "domo" => Expected {
            authorization: Some(BASIC),
            ..post("https://api.domo.com/oauth/token", FORM, "grant_type=client_credentials", d)
        },
        "google_analytics" | "universal_analytics" => {
            post("https://oauth2.googleapis.com/token", FORM, CODE_FORM, d)
        }
        "microsoft_advertising" => post(
            "https://login.microsoftonline.com/consumers/oauth2/v2.0/token",
            FORM,
            CODE_FORM,
            d,
        ),
        "outreach" => post(
            "https://api.outreach.io/oauth/token?client_id=client&client_secret=secret&grant_type=authorization_code&code=CODE456&redirect_uri={R}",
            FORM,
            "",
            d,
        ),
        "powerreviews" => Expected {
            authorization: Some(BASIC),
            ..post(
                "https://enterprise-api.powerreviews.com/oauth2/token",
                FORM,
                "grant_type=client_credentials",
                d,
            )
        },
        "salesforce" => post("https://{D}/services/oauth2/token", FORM, CODE_FORM, d),
        "snap" => post(
            "https://accounts.snapchat.com/login/oauth2/access_token",
            FORM,
            "client_id=client&client_secret=secret&code=CODE456&grant_type=authorization_code&redirect_uri={R}&scope=snapchat-marketing-api",
            d,
        ),
        "unbounce" => post("https://api.unbounce.com/oauth/token", FORM, CODE_FORM, d),
        other => panic!("no connector {other}"),
    }
}

/// The renewal request: `refresh_request` with `REFRESH789` for authorization code; the
/// token request again for client credentials (Fides since PR #5569).
pub fn refresh(key: &str, domain: &str) -> Expected {
    let d = domain;
    match key {
        "auth0" | "domo" | "powerreviews" => token(key, domain),
        "adobe_sign" => post(
            "https://api.na3.adobesign.com/oauth/v2/refresh",
            FORM,
            REFRESH_FORM_WITH_REDIRECT,
            d,
        ),
        "google_analytics" | "universal_analytics" => {
            post("https://oauth2.googleapis.com/token", FORM, REFRESH_FORM, d)
        }
        "microsoft_advertising" => post(
            "https://login.microsoftonline.com/consumers/oauth2/v2.0/token",
            FORM,
            REFRESH_FORM_WITH_REDIRECT,
            d,
        ),
        "outreach" => post(
            "https://api.outreach.io/oauth/token?client_id=client&client_secret=secret&redirect_uri={R}&grant_type=refresh_token&refresh_token=REFRESH789",
            FORM,
            "",
            d,
        ),
        "salesforce" => post(
            "https://login.salesforce.com/services/oauth2/token",
            FORM,
            REFRESH_FORM_WITH_REDIRECT,
            d,
        ),
        "snap" => post(
            "https://accounts.snapchat.com/login/oauth2/access_token",
            FORM,
            REFRESH_FORM,
            d,
        ),
        "unbounce" => post("https://api.unbounce.com/oauth/token", FORM, REFRESH_FORM, d),
        other => panic!("no connector {other}"),
    }
}

/// Every host name a connector file sends a token request to (for DNS overrides).
pub const TOKEN_HOSTS: [&str; 10] = [
    "api.na3.adobesign.com",
    "api.domo.com",
    "oauth2.googleapis.com",
    "login.microsoftonline.com",
    "api.outreach.io",
    "enterprise-api.powerreviews.com",
    "login.salesforce.com",
    "accounts.snapchat.com",
    "api.unbounce.com",
    "tenant.example.com",
];
