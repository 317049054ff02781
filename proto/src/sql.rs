//! SQL92 property filters, as RocketMQ's `MessageSelector.bySql` defines them
//! (`../shared/rocketmq-facts.md` §2.5): a condition over a message's user properties and its
//! tag (the pseudo-property `TAGS`) with comparisons, `BETWEEN`, `IN`, `IS [NOT] NULL`,
//! `CONTAINS` / `STARTSWITH` / `ENDSWITH`, and `AND` / `OR` / `NOT`.
//!
//! The proxy parses an expression once, at the boundary, so a malformed one is refused when a
//! consumer subscribes with it; the store parses it again from the wire and evaluates it against
//! stored messages, so messages that do not match never leave the store.
//!
//! Semantics, as RocketMQ documents them: an evaluation error, a NULL (a missing property) or
//! a type mismatch means "no match". Property values are strings; compared with a number they
//! are read as that number's type (an integer literal wants an integer, so `a > 3` does not
//! match `a = "3.5"`), compared with `TRUE`/`FALSE` as a boolean. `AND`, `OR` and `NOT` follow
//! SQL's three-valued logic (`NULL OR TRUE` is true, `NOT NULL` is NULL). Keywords are
//! case-insensitive, property names are not.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use winnow::ascii::{digit0, digit1, multispace0};
use winnow::combinator::{
    alt, cut_err, delimited, eof, opt, preceded, repeat, separated, terminated,
};
use winnow::error::{AddContext, ContextError, ErrMode, ModalResult, StrContext, StrContextValue};
use winnow::prelude::*;
use winnow::stream::Stream;
use winnow::token::{none_of, one_of, take_while};

use crate::domain::FilterError;

/// Longest SQL92 expression a subscription may have.
pub const MAX_SQL_EXPRESSION_LEN: usize = 16 * 1024;
/// Deepest nesting of parentheses an expression may have (the parser recurses on them).
pub const MAX_SQL_NESTING: usize = 64;
/// Most values one `IN (...)` list may hold.
pub const MAX_SQL_IN_LIST: usize = 1024;

/// A parsed SQL92 filter. Two filters are equal when their expressions are.
#[derive(Clone)]
pub struct SqlFilter {
    expression: Arc<str>,
    root: Arc<Cond>,
}

impl fmt::Debug for SqlFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SqlFilter").field(&self.expression).finish()
    }
}

impl PartialEq for SqlFilter {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl Eq for SqlFilter {}

impl SqlFilter {
    /// Parses an SQL92 expression; the error says where and why it is not one.
    pub fn parse(expression: &str) -> Result<Self, FilterError> {
        let error = |reason: String| FilterError::sql(expression, reason);
        if expression.len() > MAX_SQL_EXPRESSION_LEN {
            return Err(error("longer than 16 KiB".into()));
        }
        if expression.trim().is_empty() {
            return Err(error("the expression is empty".into()));
        }
        if nesting(expression) > MAX_SQL_NESTING {
            return Err(error(format!(
                "parentheses nest deeper than {MAX_SQL_NESTING}"
            )));
        }
        let root = terminated(or_expr, (multispace0, eof))
            .parse(expression)
            .map_err(|e| {
                let at = e.offset();
                let what = e.inner().to_string();
                let what = if what.is_empty() {
                    "unexpected input".to_owned()
                } else {
                    what.replace('\n', "; ")
                };
                error(format!("at byte {at}: {what}"))
            })?;
        Ok(SqlFilter {
            expression: expression.into(),
            root: Arc::new(root),
        })
    }

    /// The expression as the consumer wrote it.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Whether a message with `tag` and user `properties` passes: only a condition that
    /// evaluates to true does; NULL, a type mismatch or an evaluation error do not.
    pub fn matches(&self, tag: Option<&str>, properties: &[(String, String)]) -> bool {
        let message = Props { tag, properties };
        matches!(self.root.eval(&message), Ok(Some(true)))
    }
}

/// Deepest parenthesis nesting outside string literals.
fn nesting(expression: &str) -> usize {
    let (mut depth, mut deepest, mut quoted) = (0usize, 0usize, false);
    for c in expression.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

// ---- The syntax tree and its evaluation ----

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Property(String),
    Str(String),
    Long(i64),
    Double(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Const(bool),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Compare(Operand, CmpOp, Operand),
    Between {
        value: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    In {
        value: Operand,
        list: Vec<String>,
        negated: bool,
    },
    IsNull {
        value: Operand,
        negated: bool,
    },
    Text {
        value: Operand,
        op: TextOp,
        pattern: String,
        negated: bool,
    },
}

/// The message a condition is evaluated against.
struct Props<'a> {
    tag: Option<&'a str>,
    properties: &'a [(String, String)],
}

impl<'a> Props<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        if name == "TAGS" {
            return self.tag;
        }
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A value during evaluation.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Null,
    Str(&'a str),
    Long(i64),
    Double(f64),
    Bool(bool),
}

/// An evaluation error: the whole condition does not match.
#[derive(Debug)]
struct Mismatch;

type Truth = Result<Option<bool>, Mismatch>;

impl Operand {
    fn value<'a>(&'a self, message: &Props<'a>) -> Val<'a> {
        match self {
            Operand::Property(name) => message.get(name).map_or(Val::Null, Val::Str),
            Operand::Str(s) => Val::Str(s),
            Operand::Long(n) => Val::Long(*n),
            Operand::Double(x) => Val::Double(*x),
            Operand::Bool(b) => Val::Bool(*b),
            Operand::Null => Val::Null,
        }
    }
}

/// `s` read as the type of `like` (a property compared with a literal).
fn coerce<'a>(s: &'a str, like: Val<'_>) -> Result<Val<'a>, Mismatch> {
    let s_trim = s.trim();
    match like {
        Val::Long(_) => s_trim.parse().map(Val::Long).map_err(|_| Mismatch),
        Val::Double(_) => s_trim.parse().map(Val::Double).map_err(|_| Mismatch),
        Val::Bool(_) => match s_trim.to_ascii_lowercase().as_str() {
            "true" => Ok(Val::Bool(true)),
            "false" => Ok(Val::Bool(false)),
            _ => Err(Mismatch),
        },
        Val::Str(_) | Val::Null => Ok(Val::Str(s)),
    }
}

/// Two strings ordered as numbers: integers if both are, else floating point.
fn numeric_order(a: &str, b: &str) -> Result<Option<Ordering>, Mismatch> {
    if let (Ok(x), Ok(y)) = (a.trim().parse::<i64>(), b.trim().parse::<i64>()) {
        return Ok(Some(x.cmp(&y)));
    }
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => Ok(x.partial_cmp(&y)),
        _ => Err(Mismatch),
    }
}

fn compare(left: Val<'_>, op: CmpOp, right: Val<'_>) -> Truth {
    let (left, right) = match (left, right) {
        (Val::Null, _) | (_, Val::Null) => return Ok(None),
        (Val::Str(s), other @ (Val::Long(_) | Val::Double(_) | Val::Bool(_))) => {
            (coerce(s, other)?, other)
        }
        (other @ (Val::Long(_) | Val::Double(_) | Val::Bool(_)), Val::Str(s)) => {
            (other, coerce(s, other)?)
        }
        pair => pair,
    };
    let ordering = match (left, right) {
        (Val::Str(a), Val::Str(b)) => match op {
            CmpOp::Eq => return Ok(Some(a == b)),
            CmpOp::Ne => return Ok(Some(a != b)),
            _ => numeric_order(a, b)?,
        },
        (Val::Long(a), Val::Long(b)) => Some(a.cmp(&b)),
        (Val::Double(a), Val::Double(b)) => a.partial_cmp(&b),
        (Val::Bool(a), Val::Bool(b)) => match op {
            CmpOp::Eq => return Ok(Some(a == b)),
            CmpOp::Ne => return Ok(Some(a != b)),
            _ => return Err(Mismatch),
        },
        // An integer against a floating-point number, or a boolean against a number.
        _ => return Err(Mismatch),
    };
    // NaN orders with nothing: NULL.
    Ok(ordering.map(|o| match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }))
}

fn negate_if(truth: Option<bool>, negated: bool) -> Option<bool> {
    truth.map(|t| t != negated)
}

impl Cond {
    fn eval(&self, message: &Props<'_>) -> Truth {
        match self {
            Cond::Const(b) => Ok(Some(*b)),
            Cond::And(parts) => {
                let mut unknown = false;
                for part in parts {
                    match part.eval(message)? {
                        Some(false) => return Ok(Some(false)),
                        Some(true) => {}
                        None => unknown = true,
                    }
                }
                Ok((!unknown).then_some(true))
            }
            Cond::Or(parts) => {
                let mut unknown = false;
                for part in parts {
                    match part.eval(message)? {
                        Some(true) => return Ok(Some(true)),
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
                Ok((!unknown).then_some(false))
            }
            Cond::Not(inner) => Ok(inner.eval(message)?.map(|t| !t)),
            Cond::Compare(left, op, right) => {
                compare(left.value(message), *op, right.value(message))
            }
            Cond::Between {
                value,
                low,
                high,
                negated,
            } => {
                let v = value.value(message);
                let above = compare(v, CmpOp::Ge, low.value(message))?;
                let below = compare(v, CmpOp::Le, high.value(message))?;
                let within = match (above, below) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                Ok(negate_if(within, *negated))
            }
            Cond::In {
                value,
                list,
                negated,
            } => match value.value(message) {
                Val::Null => Ok(None),
                Val::Str(s) => Ok(Some(list.iter().any(|x| x == s) != *negated)),
                _ => Err(Mismatch),
            },
            Cond::IsNull { value, negated } => {
                Ok(Some(matches!(value.value(message), Val::Null) != *negated))
            }
            Cond::Text {
                value,
                op,
                pattern,
                negated,
            } => match value.value(message) {
                Val::Null => Ok(None),
                Val::Str(s) => {
                    let found = match op {
                        TextOp::Contains => s.contains(pattern.as_str()),
                        TextOp::StartsWith => s.starts_with(pattern.as_str()),
                        TextOp::EndsWith => s.ends_with(pattern.as_str()),
                    };
                    Ok(Some(found != *negated))
                }
                _ => Err(Mismatch),
            },
        }
    }
}

// ---- The grammar ----
//
//   or      := and (OR and)*
//   and     := not (AND not)*
//   not     := NOT* predicate
//   predicate := '(' or ')' | operand tail?
//   tail    := cmp operand | [NOT] BETWEEN operand AND operand | [NOT] IN '(' string, … ')'
//            | IS [NOT] NULL | [NOT] (CONTAINS | STARTSWITH | ENDSWITH) string
//   operand := property | 'string' | number | TRUE | FALSE | NULL

type In<'a> = &'a str;

const KEYWORDS: [&str; 12] = [
    "AND",
    "OR",
    "NOT",
    "BETWEEN",
    "IN",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "CONTAINS",
    "STARTSWITH",
    "ENDSWITH",
];

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

fn word<'a>(input: &mut In<'a>) -> ModalResult<&'a str> {
    preceded(
        multispace0,
        (
            one_of(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$'),
            take_while(0.., |c: char| {
                c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.'
            }),
        )
            .take(),
    )
    .parse_next(input)
}

fn keyword<'a>(kw: &'static str) -> impl Parser<In<'a>, &'a str, ErrMode<ContextError>> {
    word.verify(move |w: &str| w.eq_ignore_ascii_case(kw))
}

fn symbol<'a>(s: &'static str) -> impl Parser<In<'a>, &'a str, ErrMode<ContextError>> {
    preceded(multispace0, s)
}

fn property(input: &mut In<'_>) -> ModalResult<Operand> {
    word.verify(|w: &str| !KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)))
        .map(|w| Operand::Property(w.to_owned()))
        .parse_next(input)
}

fn string(input: &mut In<'_>) -> ModalResult<String> {
    preceded(
        multispace0,
        delimited(
            '\'',
            repeat(0.., alt(("''".value('\''), none_of('\'')))),
            cut_err('\'').context(expected("a closing quote")),
        ),
    )
    .parse_next(input)
}

fn number(input: &mut In<'_>) -> ModalResult<Operand> {
    let text = preceded(
        multispace0,
        (
            opt('-'),
            digit1,
            opt(('.', digit0)),
            opt((one_of(['e', 'E']), opt(one_of(['+', '-'])), digit1)),
        )
            .take(),
    )
    .parse_next(input)?;
    let parsed = if text.contains(['.', 'e', 'E']) {
        text.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Operand::Double)
    } else {
        text.parse::<i64>().ok().map(Operand::Long)
    };
    match parsed {
        Some(n) => Ok(n),
        None => refuse(input, "a number that fits in 64 bits"),
    }
}

/// A cut error: the expression cannot be one, whatever follows.
fn refuse<T>(input: &In<'_>, what: &'static str) -> ModalResult<T> {
    Err(ErrMode::Cut(ContextError::new().add_context(
        input,
        &input.checkpoint(),
        expected(what),
    )))
}

fn operand(input: &mut In<'_>) -> ModalResult<Operand> {
    alt((
        string.map(Operand::Str),
        number,
        keyword("TRUE").value(Operand::Bool(true)),
        keyword("FALSE").value(Operand::Bool(false)),
        keyword("NULL").value(Operand::Null),
        property,
    ))
    .context(expected(
        "a property, a string, a number, TRUE, FALSE or NULL",
    ))
    .parse_next(input)
}

fn cmp_op(input: &mut In<'_>) -> ModalResult<CmpOp> {
    preceded(
        multispace0,
        alt((
            "<>".value(CmpOp::Ne),
            "<=".value(CmpOp::Le),
            ">=".value(CmpOp::Ge),
            "=".value(CmpOp::Eq),
            "<".value(CmpOp::Lt),
            ">".value(CmpOp::Gt),
        )),
    )
    .parse_next(input)
}

fn text_op(input: &mut In<'_>) -> ModalResult<TextOp> {
    alt((
        keyword("CONTAINS").value(TextOp::Contains),
        keyword("STARTSWITH").value(TextOp::StartsWith),
        keyword("ENDSWITH").value(TextOp::EndsWith),
    ))
    .parse_next(input)
}

/// A numeric operand for an ordering comparison: strings, booleans and NULL literals are
/// refused when the expression is parsed, as RocketMQ does.
fn orderable(op: &Operand) -> bool {
    matches!(
        op,
        Operand::Property(_) | Operand::Long(_) | Operand::Double(_)
    )
}

fn tail(value: Operand) -> impl FnMut(&mut In<'_>) -> ModalResult<Cond> {
    move |input: &mut In<'_>| {
        let value = value.clone();
        if let Some(op) = opt(cmp_op).parse_next(input)? {
            let right = cut_err(operand).parse_next(input)?;
            let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
            if ordering && !(orderable(&value) && orderable(&right)) {
                return refuse(input, "numbers on both sides of <, <=, > and >=");
            }
            return Ok(Cond::Compare(value, op, right));
        }
        if opt(keyword("IS")).parse_next(input)?.is_some() {
            let negated = opt(keyword("NOT")).parse_next(input)?.is_some();
            cut_err(keyword("NULL"))
                .context(expected("NULL after IS"))
                .parse_next(input)?;
            return Ok(Cond::IsNull { value, negated });
        }
        let negated = opt(keyword("NOT")).parse_next(input)?.is_some();
        if opt(keyword("BETWEEN")).parse_next(input)?.is_some() {
            let (low, _, high) = cut_err((operand, keyword("AND"), operand))
                .context(expected("BETWEEN low AND high"))
                .parse_next(input)?;
            if !(orderable(&value) && orderable(&low) && orderable(&high)) {
                return refuse(input, "numbers in BETWEEN");
            }
            return Ok(Cond::Between {
                value,
                low,
                high,
                negated,
            });
        }
        if opt(keyword("IN")).parse_next(input)?.is_some() {
            let list: Vec<String> = cut_err(delimited(
                symbol("("),
                separated(1..=MAX_SQL_IN_LIST, string, symbol(",")),
                symbol(")"),
            ))
            .context(expected("IN ('a', 'b', …) with at most 1024 strings"))
            .parse_next(input)?;
            return Ok(Cond::In {
                value,
                list,
                negated,
            });
        }
        if let Some(op) = opt(text_op).parse_next(input)? {
            let pattern = cut_err(string)
                .context(expected("a string to match"))
                .parse_next(input)?;
            return Ok(Cond::Text {
                value,
                op,
                pattern,
                negated,
            });
        }
        if negated {
            return refuse(
                input,
                "BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH after NOT",
            );
        }
        match value {
            Operand::Bool(b) => Ok(Cond::Const(b)),
            _ => refuse(
                input,
                "a comparison, BETWEEN, IN, IS [NOT] NULL or a text match",
            ),
        }
    }
}

fn predicate(input: &mut In<'_>) -> ModalResult<Cond> {
    if opt(symbol("(")).parse_next(input)?.is_some() {
        let inner = cut_err(or_expr).parse_next(input)?;
        cut_err(symbol(")"))
            .context(expected("a closing parenthesis"))
            .parse_next(input)?;
        return Ok(inner);
    }
    let value = operand.parse_next(input)?;
    tail(value).parse_next(input)
}

fn not_expr(input: &mut In<'_>) -> ModalResult<Cond> {
    // Folded, not recursed: a long run of NOTs cannot exhaust the stack.
    let nots: usize = repeat(0.., keyword("NOT")).parse_next(input)?;
    let mut cond = cut_err(predicate).parse_next(input)?;
    for _ in 0..nots {
        cond = Cond::Not(Box::new(cond));
    }
    Ok(cond)
}

fn and_expr(input: &mut In<'_>) -> ModalResult<Cond> {
    let parts: Vec<Cond> = separated(1.., not_expr, keyword("AND")).parse_next(input)?;
    Ok(flatten(parts, Cond::And))
}

fn or_expr(input: &mut In<'_>) -> ModalResult<Cond> {
    let parts: Vec<Cond> = separated(1.., and_expr, keyword("OR")).parse_next(input)?;
    Ok(flatten(parts, Cond::Or))
}

fn flatten(mut parts: Vec<Cond>, join: fn(Vec<Cond>) -> Cond) -> Cond {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        join(parts)
    }
}

#[cfg(test)]
mod tests;
