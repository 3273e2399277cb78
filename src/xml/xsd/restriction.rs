//! Simple type restrictions: a base type (named or anonymous) narrowed by facets, each facet
//! checked for the base it applies to; enumeration values must themselves be valid.

use super::document::{Node, XS_NS};
use super::simple::{Decimal, SimpleType, WhiteSpace};
use super::{Compiler, Named, SchemaError, regex, simple};

impl<'a> Compiler<'a> {
    /// xs:simpleType: one xs:restriction (list and union are not supported).
    pub(super) fn simple_type(&mut self, at: Named<'a>, node: &'a Node, name: &str) -> Result<usize, SchemaError> {
        let children: Vec<&Node> = Self::content(node).collect();
        let [r] = children.as_slice() else {
            return Err(self.err(at.file, node, "xs:simpleType needs exactly one xs:restriction"));
        };
        if !r.is_xs("restriction") {
            return Err(self.unsupported(at.file, r));
        }
        self.only_attrs(at.file, r, &["base"])?;
        let facets: Vec<&Node> = Self::content(r).filter(|c| !c.is_xs("simpleType")).collect();
        let anonymous: Vec<&Node> = Self::content(r).filter(|c| c.is_xs("simpleType")).collect();
        let base = match (r.attr("base"), anonymous.as_slice()) {
            (Some(b), []) => {
                let q = r.resolve_qname(b).ok_or_else(|| self.err(at.file, r, format!("unknown prefix in {b:?}")))?;
                self.simple_ref(at.file, r, &q)?
            }
            (None, [a]) => self.simple_type(at, a, "anonymous")?,
            _ => return Err(self.err(at.file, r, "xs:restriction needs a base or one anonymous xs:simpleType")),
        };
        let mut st = self.schema.simple[base].clone();
        st.name = name.to_owned();
        let mut patterns = Vec::new();
        let mut enumeration: Vec<String> = Vec::new();
        for f in facets {
            match f.local.as_str() {
                "pattern" if f.ns == XS_NS => {
                    self.only_attrs(at.file, f, &["value", "fixed"])?;
                    let value = self.facet_value(at.file, f)?;
                    patterns.push(regex::compile(value).map_err(|m| self.err(at.file, f, m))?);
                }
                "enumeration" if f.ns == XS_NS => {
                    self.only_attrs(at.file, f, &["value", "fixed"])?;
                    let value = self.facet_value(at.file, f)?;
                    enumeration.push(simple::normalize(value, st.whitespace).into_owned());
                }
                _ => self.facet(at.file, f, &mut st)?,
            }
        }
        if !patterns.is_empty() {
            st.patterns.push(patterns);
        }
        if !enumeration.is_empty() {
            // Each value must itself be valid for the base type.
            let base_type = st.clone();
            for v in &enumeration {
                let mut check = base_type.clone();
                check.enumeration = None;
                check.check(v).map_err(|m| self.err(at.file, r, format!("enumeration value: {m}")))?;
            }
            st.enumeration = Some(enumeration);
        }
        self.schema.simple.push(st);
        Ok(self.schema.simple.len() - 1)
    }

    /// A facet's `value`.
    fn facet_value<'n>(&self, file: usize, f: &'n Node) -> Result<&'n str, SchemaError> {
        f.attr("value").ok_or_else(|| self.err(file, f, format!("xs:{} without a value", f.local)))
    }

    /// One facet other than pattern and enumeration, narrowing `st`; refused where it does
    /// not apply to the base.
    fn facet(&self, file: usize, f: &Node, st: &mut SimpleType) -> Result<(), SchemaError> {
        if f.ns != XS_NS {
            return Err(self.unsupported(file, f));
        }
        self.only_attrs(file, f, &["value", "fixed"])?;
        let value = self.facet_value(file, f)?;
        let number = |s: &Self| -> Result<u64, SchemaError> {
            value.trim().parse().map_err(|_| s.err(file, f, format!("xs:{} needs a non-negative integer", f.local)))
        };
        let decimal = |s: &Self| -> Result<Decimal, SchemaError> {
            if !st.builtin.is_numeric() {
                return Err(s.err(file, f, format!("xs:{} is supported on numeric types only", f.local)));
            }
            Decimal::parse(value.trim()).ok_or_else(|| s.err(file, f, format!("xs:{} needs a decimal value", f.local)))
        };
        let length_ok = |s: &Self| -> Result<(), SchemaError> {
            if st.builtin.has_length() {
                Ok(())
            } else {
                Err(s.err(file, f, format!("xs:{} does not apply to {}", f.local, st.name)))
            }
        };
        match f.local.as_str() {
            "length" => {
                length_ok(self)?;
                st.length = Some(number(self)?);
            }
            "minLength" => {
                length_ok(self)?;
                st.min_length = Some(number(self)?);
            }
            "maxLength" => {
                length_ok(self)?;
                st.max_length = Some(number(self)?);
            }
            "minInclusive" => st.min_inclusive = Some(decimal(self)?),
            "maxInclusive" => st.max_inclusive = Some(decimal(self)?),
            "minExclusive" => st.min_exclusive = Some(decimal(self)?),
            "maxExclusive" => st.max_exclusive = Some(decimal(self)?),
            "totalDigits" => {
                decimal(self)?;
                st.total_digits = Some(number(self)? as u32);
            }
            "fractionDigits" => {
                decimal(self)?;
                st.fraction_digits = Some(number(self)? as u32);
            }
            "whiteSpace" => {
                let ws = match value {
                    "preserve" => WhiteSpace::Preserve,
                    "replace" => WhiteSpace::Replace,
                    "collapse" => WhiteSpace::Collapse,
                    _ => return Err(self.err(file, f, format!("bad whiteSpace {value:?}"))),
                };
                let rank = |w: WhiteSpace| match w {
                    WhiteSpace::Preserve => 0,
                    WhiteSpace::Replace => 1,
                    WhiteSpace::Collapse => 2,
                };
                if rank(ws) < rank(st.whitespace) {
                    return Err(self.err(file, f, "whiteSpace may only be tightened"));
                }
                st.whitespace = ws;
            }
            _ => return Err(self.unsupported(file, f)),
        }
        Ok(())
    }
}
