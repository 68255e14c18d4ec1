//! The errno table of the JSON contract: the one place where errno numbers and their
//! default messages are defined (the seed project's `RET` codes, as integers).

/// An errno of the `/passport/*` JSON answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Errno {
    /// Success.
    Ok = 0,
    /// Redis or PostgreSQL unreachable or failing.
    DbErr = 4001,
    /// Image code or SMS code expired / unknown.
    NoData = 4002,
    /// Mobile already registered.
    DataExist = 4003,
    /// Bad mobile format, wrong image code, wrong SMS code.
    DataErr = 4004,
    /// Missing/empty parameter, wrong type, malformed body.
    ParamErr = 4103,
    /// Rate limited.
    ReqErr = 4201,
    /// Message broker refused or unreachable.
    ThirdErr = 4301,
    /// Anything else unexpected.
    ServerErr = 4500,
}

impl Errno {
    /// Every errno, in table order (for documentation and tests).
    pub const ALL: [Errno; 9] = [
        Errno::Ok,
        Errno::DbErr,
        Errno::NoData,
        Errno::DataExist,
        Errno::DataErr,
        Errno::ParamErr,
        Errno::ReqErr,
        Errno::ThirdErr,
        Errno::ServerErr,
    ];

    /// The number sent as `errno`.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The seed's generic message for this errno (`error_map`), used when a more precise
    /// message is not given.
    pub const fn default_message(self) -> &'static str {
        match self {
            Errno::Ok => "成功",
            Errno::DbErr => "数据库查询错误",
            Errno::NoData => "无数据",
            Errno::DataExist => "数据已存在",
            Errno::DataErr => "数据错误",
            Errno::ParamErr => "参数错误",
            Errno::ReqErr => "非法请求或请求次数受限",
            Errno::ThirdErr => "第三方系统错误",
            Errno::ServerErr => "内部错误",
        }
    }
}
