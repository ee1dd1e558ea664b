//! Expressions as text: `amount > 500 and country != 'US'`.
//!
//! The grammar, loosest binding first:
//!
//! ```text
//! expr     := or
//! or       := and ("or" and)*
//! and      := not ("and" not)*
//! not      := "not" not | compare
//! compare  := sum (("=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") sum)?
//!           | sum "is" ["not"] "null"
//!           | sum ["not"] "between" sum "and" sum
//! sum      := product (("+" | "-") product)*
//! product  := unary (("*" | "/" | "%") unary)*
//! unary    := "-" unary | primary
//! primary  := integer | float | 'string' ('' escapes a quote) | true | false | null
//!           | column | "quoted column" | name "(" [expr ("," expr)*] ")"
//!           | cast "(" expr as type ")" | case (when expr then expr)+ [else expr] end
//!           | "(" expr ")"
//! ```
//!
//! Keywords are case-insensitive; integers are `Int64` and decimals `Float64` literals (the
//! engine converts a literal to the type of the column it meets when that is exact). Function
//! names are those of [`super::ScalarFunction`] (`pow` is `power`). Errors name the byte
//! position.
//!
//! ```
//! use sabot::expr::{col, lit, parse_expr};
//! let e = parse_expr("amount > 500 and country != 'US'").unwrap();
//! assert_eq!(e, col("amount").gt(lit(500i64)).and(col("country").not_eq(lit("US"))));
//! assert!(parse_expr("amount >").unwrap_err().to_string().contains("position 8"));
//! ```

use arrow::datatypes::{DataType, TimeUnit};

use super::{BinaryOp, Expr, ScalarFunction, ScalarValue, col, lit};
use crate::{Result, SabotError};

/// Parses an expression (see the [module docs](self) for the grammar).
pub fn parse_expr(text: &str) -> Result<Expr> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, pos: 0, len: text.len() };
    let e = p.expr()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(error(t.at, format!("unexpected {}", t.kind))),
    }
}

fn error(at: usize, message: impl std::fmt::Display) -> SabotError {
    SabotError::plan(format!("expression parse error at position {at}: {message}"))
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Int(String),
    Float(f64),
    Str(String),
    Ident(String),
    Quoted(String),
    Op(&'static str),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Int(s) => write!(f, "number {s}"),
            Kind::Float(v) => write!(f, "number {v}"),
            Kind::Str(s) => write!(f, "string '{s}'"),
            Kind::Ident(s) => write!(f, "'{s}'"),
            Kind::Quoted(s) => write!(f, "\"{s}\""),
            Kind::Op(s) => write!(f, "'{s}'"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    at: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    const OPS: [&str; 17] = ["<=", ">=", "!=", "<>", "==", "=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",", "."];
    let bytes = text.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let at = i;
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let mut j = i;
            let mut float = false;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'.' {
                float = true;
                j += 1;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
            }
            if j < bytes.len() && (bytes[j] == b'e' || bytes[j] == b'E') {
                let mut k = j + 1;
                if k < bytes.len() && (bytes[k] == b'+' || bytes[k] == b'-') {
                    k += 1;
                }
                if k < bytes.len() && bytes[k].is_ascii_digit() {
                    float = true;
                    j = k;
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                }
            }
            let s = &text[i..j];
            let kind = if float {
                Kind::Float(s.parse().map_err(|_| error(at, format!("bad number {s}")))?)
            } else {
                Kind::Int(s.to_string())
            };
            out.push(Token { kind, at });
            i = j;
        } else if c == b'\'' || c == b'"' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                let Some(ch) = text[j..].chars().next() else {
                    return Err(error(at, "unterminated quote"));
                };
                if ch as u32 == c as u32 {
                    if bytes.get(j + 1) == Some(&c) {
                        s.push(ch);
                        j += 2;
                        continue;
                    }
                    j += 1;
                    break;
                }
                s.push(ch);
                j += ch.len_utf8();
            }
            out.push(Token { kind: if c == b'\'' { Kind::Str(s) } else { Kind::Quoted(s) }, at });
            i = j;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            out.push(Token { kind: Kind::Ident(text[i..j].to_string()), at });
            i = j;
        } else if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            out.push(Token { kind: Kind::Op(op), at });
            i += op.len();
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(error(at, format!("unexpected character '{ch}'")));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn here(&self) -> usize {
        self.peek().map_or(self.len, |t| t.at)
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Ident(s), .. }) if s.eq_ignore_ascii_case(word))
    }

    fn keyword(&mut self, word: &str) -> bool {
        let found = self.is_keyword(word);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_keyword(&mut self, word: &str) -> Result<()> {
        if self.keyword(word) { Ok(()) } else { Err(self.unexpected(&format!("'{}'", word.to_uppercase()))) }
    }

    fn op(&mut self, op: &str) -> bool {
        let found = matches!(self.peek(), Some(Token { kind: Kind::Op(o), .. }) if *o == op);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_op(&mut self, op: &str) -> Result<()> {
        if self.op(op) { Ok(()) } else { Err(self.unexpected(&format!("'{op}'"))) }
    }

    fn unexpected(&self, wanted: &str) -> SabotError {
        match self.peek() {
            Some(t) => error(t.at, format!("expected {wanted}, found {}", t.kind)),
            None => error(self.len, format!("expected {wanted}, found the end")),
        }
    }

    fn expr(&mut self) -> Result<Expr> {
        let mut e = self.and()?;
        while self.keyword("or") {
            e = e.or(self.and()?);
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut e = self.not()?;
        while self.keyword("and") {
            e = e.and(self.not()?);
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr> {
        let left = self.sum()?;
        if self.keyword("is") {
            let negated = self.keyword("not");
            self.expect_keyword("null")?;
            return Ok(if negated { left.is_not_null() } else { left.is_null() });
        }
        let negated_between = self.is_keyword("not")
            && matches!(self.tokens.get(self.pos + 1), Some(Token { kind: Kind::Ident(s), .. }) if s.eq_ignore_ascii_case("between"));
        if negated_between {
            self.pos += 1;
        }
        if self.keyword("between") {
            let low = self.sum()?;
            self.expect_keyword("and")?;
            let high = self.sum()?;
            let e = left.between(low, high);
            return Ok(if negated_between { Expr::Not(Box::new(e)) } else { e });
        }
        let op = match self.peek() {
            Some(Token { kind: Kind::Op(o), .. }) => match *o {
                "=" | "==" => Some(BinaryOp::Eq),
                "!=" | "<>" => Some(BinaryOp::NotEq),
                "<" => Some(BinaryOp::Lt),
                "<=" => Some(BinaryOp::LtEq),
                ">" => Some(BinaryOp::Gt),
                ">=" => Some(BinaryOp::GtEq),
                _ => None,
            },
            _ => None,
        };
        match op {
            Some(op) => {
                self.pos += 1;
                let right = self.sum()?;
                Ok(Expr::Binary { left: Box::new(left), op, right: Box::new(right) })
            }
            None => Ok(left),
        }
    }

    fn sum(&mut self) -> Result<Expr> {
        let mut e = self.product()?;
        loop {
            if self.op("+") {
                e = e + self.product()?;
            } else if self.op("-") {
                e = e - self.product()?;
            } else {
                return Ok(e);
            }
        }
    }

    fn product(&mut self) -> Result<Expr> {
        let mut e = self.unary()?;
        loop {
            if self.op("*") {
                e = e * self.unary()?;
            } else if self.op("/") {
                e = e / self.unary()?;
            } else if self.op("%") {
                e = e % self.unary()?;
            } else {
                return Ok(e);
            }
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.op("-") {
            // A negative number is one literal (so that it keeps literal coercion rules).
            if let Some(Token { kind: Kind::Int(digits), at }) = self.peek().cloned() {
                self.pos += 1;
                let v: i128 = digits.parse().map_err(|_| error(at, format!("integer {digits} is too large")))?;
                let v = i64::try_from(-v).map_err(|_| error(at, format!("integer -{digits} is too large")))?;
                return Ok(lit(v));
            }
            if let Some(Token { kind: Kind::Float(v), .. }) = self.peek().cloned() {
                self.pos += 1;
                return Ok(lit(-v));
            }
            return Ok(-self.unary()?);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.unexpected("an expression"));
        };
        self.pos += 1;
        let at = token.at;
        match token.kind {
            Kind::Int(digits) => {
                let v: i64 = digits.parse().map_err(|_| error(at, format!("integer {digits} is too large")))?;
                Ok(lit(v))
            }
            Kind::Float(v) => Ok(lit(v)),
            Kind::Str(s) => Ok(lit(s)),
            Kind::Quoted(name) => Ok(col(name)),
            Kind::Op("(") => {
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Kind::Op(_) => {
                self.pos -= 1;
                Err(self.unexpected("an expression"))
            }
            Kind::Ident(name) => {
                let lower = name.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => return Ok(lit(true)),
                    "false" => return Ok(lit(false)),
                    "null" => return Ok(Expr::Literal(ScalarValue::Null)),
                    "cast" => return self.cast(),
                    "case" => return self.case(),
                    "and" | "or" | "not" | "is" | "as" | "when" | "then" | "else" | "end" | "between" => {
                        self.pos -= 1;
                        return Err(self.unexpected("an expression"));
                    }
                    _ => {}
                }
                if self.op("(") {
                    let func = function(&lower).ok_or_else(|| error(at, format!("unknown function '{name}'")))?;
                    let mut args = vec![];
                    if !self.op(")") {
                        loop {
                            args.push(self.expr()?);
                            if self.op(")") {
                                break;
                            }
                            self.expect_op(",")?;
                        }
                    }
                    return Ok(Expr::Function { func, args });
                }
                Ok(col(name))
            }
        }
    }

    fn cast(&mut self) -> Result<Expr> {
        self.expect_op("(")?;
        let e = self.expr()?;
        self.expect_keyword("as")?;
        let at = self.here();
        let Some(Token { kind: Kind::Ident(name), .. }) = self.peek().cloned() else {
            return Err(self.unexpected("a type name"));
        };
        self.pos += 1;
        let to = data_type(&name.to_ascii_lowercase()).ok_or_else(|| error(at, format!("unknown type '{name}'")))?;
        self.expect_op(")")?;
        Ok(e.cast(to))
    }

    fn case(&mut self) -> Result<Expr> {
        let mut branches = vec![];
        while self.keyword("when") {
            let c = self.expr()?;
            self.expect_keyword("then")?;
            branches.push((c, self.expr()?));
        }
        if branches.is_empty() {
            return Err(self.unexpected("'WHEN'"));
        }
        let otherwise = if self.keyword("else") { Some(Box::new(self.expr()?)) } else { None };
        self.expect_keyword("end")?;
        Ok(Expr::Case { branches, otherwise })
    }
}

fn function(name: &str) -> Option<ScalarFunction> {
    use ScalarFunction::*;
    Some(match name {
        "abs" => Abs,
        "sqrt" => Sqrt,
        "exp" => Exp,
        "ln" => Ln,
        "log10" => Log10,
        "power" | "pow" => Power,
        "round" => Round,
        "floor" => Floor,
        "ceil" | "ceiling" => Ceil,
        "upper" => Upper,
        "lower" => Lower,
        "length" => Length,
        "trim" => Trim,
        "substring" | "substr" => Substring,
        "concat" => Concat,
        "starts_with" => StartsWith,
        "ends_with" => EndsWith,
        "contains" => Contains,
        "coalesce" => Coalesce,
        _ => return None,
    })
}

fn data_type(name: &str) -> Option<DataType> {
    Some(match name {
        "bool" | "boolean" => DataType::Boolean,
        "tinyint" | "int8" => DataType::Int8,
        "smallint" | "int16" => DataType::Int16,
        "int" | "integer" | "int32" => DataType::Int32,
        "bigint" | "int64" | "long" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "real" | "float32" => DataType::Float32,
        "float" | "double" | "float64" => DataType::Float64,
        "string" | "text" | "varchar" | "utf8" => DataType::Utf8,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
        _ => return None,
    })
}
