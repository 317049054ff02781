#![allow(clippy::unwrap_used)]

use super::*;

fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn check(expression: &str, tag: Option<&str>, pairs: &[(&str, &str)]) -> bool {
    SqlFilter::parse(expression)
        .unwrap_or_else(|e| panic!("{expression:?} should parse: {e}"))
        .matches(tag, &props(pairs))
}

/// RocketMQ's documented semantics, case by case: (expression, tag, properties, matches).
#[test]
fn a_table_of_cases_from_rocketmqs_documented_semantics() {
    type Case<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case] = &[
        // Numeric comparisons read the property as the literal's type.
        ("a > 5", None, &[("a", "10")], true),
        ("a > 5", None, &[("a", "5")], false),
        ("a >= 5", None, &[("a", "5")], true),
        ("a < 5", None, &[("a", "-3")], true),
        ("a <= 5", None, &[("a", "6")], false),
        ("a = 5", None, &[("a", "5")], true),
        ("a <> 5", None, &[("a", "5")], false),
        ("a > 1.5", None, &[("a", "2")], true),
        ("a > 1.5", None, &[("a", "1.25")], false),
        // An integer literal wants an integer: a float property is a mismatch, no match.
        ("a > 3", None, &[("a", "3.5")], false),
        ("a < 3", None, &[("a", "3.5")], false),
        // A string that is no number: an evaluation error, no match (either way round).
        ("a > 5", None, &[("a", "abc")], false),
        ("a <= 5", None, &[("a", "abc")], false),
        // A missing property is NULL: no match, and NOT does not turn NULL into a match.
        ("a > 5", None, &[], false),
        ("NOT (a > 5)", None, &[], false),
        ("NOT (a > 5)", None, &[("a", "1")], true),
        // Strings.
        ("b = 'abc'", None, &[("b", "abc")], true),
        ("b = 'abc'", None, &[("b", "abcd")], false),
        ("b <> 'abc'", None, &[("b", "x")], true),
        ("b <> 'abc'", None, &[], false),
        ("b = 'it''s'", None, &[("b", "it's")], true),
        // Two properties ordered against each other as numbers.
        ("a < b", None, &[("a", "2"), ("b", "10")], true),
        ("a = b", None, &[("a", "x"), ("b", "x")], true),
        // BETWEEN is inclusive on both ends; NOT BETWEEN is its complement.
        ("a BETWEEN 1 AND 3", None, &[("a", "1")], true),
        ("a BETWEEN 1 AND 3", None, &[("a", "3")], true),
        ("a BETWEEN 1 AND 3", None, &[("a", "4")], false),
        ("a NOT BETWEEN 1 AND 3", None, &[("a", "4")], true),
        ("a NOT BETWEEN 1 AND 3", None, &[("a", "2")], false),
        ("a NOT BETWEEN 1 AND 3", None, &[], false),
        // IN takes strings.
        ("c IN ('x', 'y')", None, &[("c", "y")], true),
        ("c IN ('x', 'y')", None, &[("c", "z")], false),
        ("c NOT IN ('x', 'y')", None, &[("c", "z")], true),
        ("c NOT IN ('x', 'y')", None, &[], false),
        // IS [NOT] NULL asks whether the property is there.
        ("d IS NULL", None, &[], true),
        ("d IS NULL", None, &[("d", "")], false),
        ("d IS NOT NULL", None, &[("d", "")], true),
        // TAGS is the message's tag.
        ("TAGS = 'TagA'", Some("TagA"), &[], true),
        ("TAGS IN ('TagA', 'TagB')", Some("TagC"), &[], false),
        ("TAGS IS NULL", None, &[], true),
        // Text matches.
        ("e CONTAINS 'ell'", None, &[("e", "hello")], true),
        ("e NOT CONTAINS 'ell'", None, &[("e", "hello")], false),
        ("e STARTSWITH 'he'", None, &[("e", "hello")], true),
        ("e ENDSWITH 'he'", None, &[("e", "hello")], false),
        ("e ENDSWITH 'lo'", None, &[], false),
        // Booleans.
        ("f = TRUE", None, &[("f", "true")], true),
        ("f = TRUE", None, &[("f", "TRUE")], true),
        ("f = FALSE", None, &[("f", "yes")], false),
        ("TRUE", None, &[], true),
        ("FALSE OR a = 1", None, &[("a", "1")], true),
        // Three-valued logic.
        ("a = 1 OR b = 'x'", None, &[("b", "x")], true),
        ("a = 1 AND b = 'x'", None, &[("b", "x")], false),
        ("NOT (a = 1 AND b = 'y')", None, &[("b", "x")], true),
        ("NOT (a = 1 OR b = 'y')", None, &[("b", "x")], false),
        // Precedence: NOT binds tighter than AND, AND tighter than OR.
        ("a = 1 OR a = 2 AND b = 'x'", None, &[("a", "1")], true),
        ("(a = 1 OR a = 2) AND b = 'x'", None, &[("a", "1")], false),
        (
            "NOT a = 1 AND b = 'x'",
            None,
            &[("a", "2"), ("b", "x")],
            true,
        ),
        // Keywords in any case; property names are case-sensitive.
        (
            "a between 0 and 3 and b='name2'",
            None,
            &[("a", "2"), ("b", "name2")],
            true,
        ),
        ("A = 1", None, &[("a", "1")], false),
        // Names with dots and dollars, as Java properties have.
        (
            "order.region = 'eu' AND $x > 0",
            None,
            &[("order.region", "eu"), ("$x", "1")],
            true,
        ),
        // The examples RocketMQ's users write.
        (
            "(TAGS IN ('TagA', 'TagB')) AND (c1 BETWEEN 4 AND 7) AND (c2 = 'v6')",
            Some("TagB"),
            &[("c1", "5"), ("c2", "v6")],
            true,
        ),
        ("a >= 0 and a <= 3", None, &[("a", "4")], false),
    ];
    for (expression, tag, pairs, want) in cases {
        assert_eq!(
            check(expression, *tag, pairs),
            *want,
            "{expression:?} with tag {tag:?} and {pairs:?}"
        );
    }
}

#[test]
fn malformed_expressions_are_refused_with_a_reason() {
    for (expression, reason) in [
        ("", "empty"),
        ("   ", "empty"),
        ("a", "a comparison"),
        ("a >", "a property, a string"),
        ("a > 'x'", "numbers on both sides"),
        ("a BETWEEN 'x' AND 'y'", "numbers in BETWEEN"),
        ("a IN ()", "IN ("),
        ("a IN (1, 2)", "IN ("),
        ("a = 'open", "closing quote"),
        ("(a = 1", "closing parenthesis"),
        ("a = 1)", "at byte"),
        ("a = 1 AND", "at byte"),
        ("a IS 5", "NULL after IS"),
        ("a NOT = 1", "after NOT"),
        ("a = 99999999999999999999", "fits in 64 bits"),
        ("AND = 1", "at byte"),
        ("a == 1", "at byte"),
    ] {
        let err = SqlFilter::parse(expression).expect_err(expression);
        assert_eq!(err.language, "SQL92");
        assert!(
            err.to_string().contains(reason),
            "{expression:?}: {err} should mention {reason:?}"
        );
    }
}

#[test]
fn size_and_nesting_are_bounded() {
    let deep = format!(
        "{}a = 1{}",
        "(".repeat(MAX_SQL_NESTING),
        ")".repeat(MAX_SQL_NESTING)
    );
    assert!(SqlFilter::parse(&deep).is_ok());
    let deeper = format!("({deep})");
    assert!(
        SqlFilter::parse(&deeper)
            .unwrap_err()
            .reason
            .contains("nest")
    );
    // Parentheses inside strings do not count.
    let quoted = format!("a = '{}'", "(".repeat(200));
    assert!(SqlFilter::parse(&quoted).is_ok());
    // A long run of NOTs is folded, not recursed.
    let nots = format!("{}a = 1", "NOT ".repeat(3000));
    assert!(check(&nots, None, &[("a", "1")]));
    let long = format!("a IN ({})", vec!["'x'"; 5000].join(","));
    assert!(
        SqlFilter::parse(&long)
            .unwrap_err()
            .reason
            .contains("16 KiB")
    );
    let many = format!("a IN ({})", vec!["'x'"; MAX_SQL_IN_LIST + 1].join(","));
    assert!(SqlFilter::parse(&many).is_err());
}

#[test]
fn filters_compare_by_expression() {
    let a = SqlFilter::parse("a = 1").unwrap();
    assert_eq!(a, SqlFilter::parse("a = 1").unwrap());
    assert_ne!(a, SqlFilter::parse("a = 2").unwrap());
    assert_eq!(a.expression(), "a = 1");
    assert_eq!(format!("{a:?}"), "SqlFilter(\"a = 1\")");
}
