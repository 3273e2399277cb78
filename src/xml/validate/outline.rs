//! The outline of a validated message: the elements below the operation element down to a
//! depth, with their names and spans, recorded as the validator reads them (what data
//! minimisation cuts, without reading the message again).

use std::ops::Range;

use super::{ElementFrame, Run, XmlRefusal};

/// An element of a validated message's outline. Offsets are into the message as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlined {
    /// 1 for a child of the operation element, 2 for a grandchild...
    pub depth: usize,
    /// The element's local name.
    pub name: Range<usize>,
    /// From its start tag to the end of its end tag.
    pub span: Range<usize>,
}

impl Run<'_> {
    /// Gives a declared element about to be pushed its place in the outline, if it is deep
    /// enough below the operation element (the first declared element pushed).
    pub(super) fn outline_element(
        &mut self,
        f: &mut ElementFrame,
        offset: usize,
        local: &str,
    ) -> Result<(), XmlRefusal> {
        let at = self.stack.len();
        let depth = at - *self.operation_at.get_or_insert(at);
        if depth == 0 || depth > self.outline_depth {
            return Ok(());
        }
        // The name is a slice of the message (quick-xml reads from it).
        let start = (local.as_ptr() as usize).wrapping_sub(self.doc.as_ptr() as usize);
        if self.doc.get(start..start.wrapping_add(local.len())).map(str::as_ptr) != Some(local.as_ptr()) {
            return Self::invalid(offset, "internal: element name outside the message");
        }
        let name = start + self.skipped..start + self.skipped + local.len();
        f.outlined = Some(self.outline.len());
        self.outline.push(Outlined { depth, name, span: offset + self.skipped..offset + self.skipped });
        Ok(())
    }
}
