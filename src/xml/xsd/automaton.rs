//! Content models compiled to deterministic automata.
//!
//! A particle tree (sequence, choice, element; with occurrence bounds) is unrolled into a
//! regular expression over element particles, turned into its Glushkov (position) automaton,
//! checked for Unique Particle Attribution (no two *different* particles may compete for the
//! same element name), and determinised. Validation is then one table lookup per child.

use std::collections::{BTreeSet, HashMap};

/// Upper bound on positions after unrolling `maxOccurs`, and on DFA states.
const MAX_POSITIONS: usize = 4096;
const MAX_STATES: usize = 4096;

/// A particle of a content model, before compilation.
#[derive(Debug, Clone)]
pub enum Particle {
    /// An element declaration (index into the schema's declarations), with the particle's
    /// identity for UPA and the element's qualified name.
    Element {
        decl: usize,
        name: (String, String),
        min: u32,
        max: Option<u32>,
    },
    Sequence {
        items: Vec<Particle>,
        min: u32,
        max: Option<u32>,
    },
    Choice {
        items: Vec<Particle>,
        min: u32,
        max: Option<u32>,
    },
}

/// A deterministic content automaton: state 0 is the start.
#[derive(Debug, Clone, Default)]
pub struct Dfa {
    pub states: Vec<DfaState>,
}

#[derive(Debug, Clone, Default)]
pub struct DfaState {
    pub accepting: bool,
    /// (namespace, local name) -> (element declaration, next state)
    pub transitions: Vec<(String, String, usize, usize)>,
}

impl Dfa {
    /// The transition for a child element, if the content model allows it here.
    pub fn step(&self, state: usize, ns: &str, local: &str) -> Option<(usize, usize)> {
        self.states
            .get(state)?
            .transitions
            .iter()
            .find(|(n, l, _, _)| l == local && n == ns)
            .map(|&(_, _, decl, next)| (decl, next))
    }

    pub fn accepts(&self, state: usize) -> bool {
        self.states.get(state).is_some_and(|s| s.accepting)
    }

    /// The element names allowed in `state` (for error messages).
    pub fn expected(&self, state: usize) -> Vec<&str> {
        self.states.get(state).map(|s| s.transitions.iter().map(|t| t.1.as_str()).collect()).unwrap_or_default()
    }
}

/// Unrolled regular expression over positions.
enum Re {
    Empty,
    Pos(usize),
    Cat(Vec<Re>),
    Alt(Vec<Re>),
    Opt(Box<Re>),
    Star(Box<Re>),
}

struct Position {
    decl: usize,
    particle: usize,
    name: (String, String),
}

struct Builder {
    positions: Vec<Position>,
    next_particle: usize,
}

impl Builder {
    /// Unrolls `p`; `pid` maps each Element particle to its identity (stable across copies).
    fn unroll(&mut self, p: &Particle, ids: &mut HashMap<*const Particle, usize>) -> Result<Re, String> {
        let (min, max) = match p {
            Particle::Element { min, max, .. }
            | Particle::Sequence { min, max, .. }
            | Particle::Choice { min, max, .. } => (*min, *max),
        };
        if let Some(max) = max
            && max < min
        {
            return Err("maxOccurs is less than minOccurs".into());
        }
        let mut one = |b: &mut Builder| -> Result<Re, String> {
            match p {
                Particle::Element { decl, name, .. } => {
                    let key = p as *const Particle;
                    let pid = *ids.entry(key).or_insert_with(|| {
                        b.next_particle += 1;
                        b.next_particle
                    });
                    if b.positions.len() >= MAX_POSITIONS {
                        return Err(format!("content model too large (over {MAX_POSITIONS} positions)"));
                    }
                    b.positions.push(Position { decl: *decl, particle: pid, name: name.clone() });
                    Ok(Re::Pos(b.positions.len() - 1))
                }
                Particle::Sequence { items, .. } => {
                    Ok(Re::Cat(items.iter().map(|i| b.unroll(i, ids)).collect::<Result<_, _>>()?))
                }
                Particle::Choice { items, .. } => {
                    Ok(Re::Alt(items.iter().map(|i| b.unroll(i, ids)).collect::<Result<_, _>>()?))
                }
            }
        };
        if max == Some(0) {
            return Ok(Re::Empty);
        }
        let mut parts = Vec::new();
        for _ in 0..min {
            parts.push(one(self)?);
        }
        match max {
            None => parts.push(Re::Star(Box::new(one(self)?))),
            Some(max) => {
                // p{0,k} as (p (p (...)?)?)? keeps the automaton deterministic.
                let mut tail: Option<Re> = None;
                for _ in min..max {
                    let item = one(self)?;
                    tail = Some(Re::Opt(Box::new(match tail {
                        None => item,
                        Some(t) => Re::Cat(vec![item, t]),
                    })));
                }
                if let Some(t) = tail {
                    parts.push(t);
                }
            }
        }
        Ok(match parts.len() {
            0 => Re::Empty,
            1 => parts.pop().unwrap_or(Re::Empty),
            _ => Re::Cat(parts),
        })
    }
}

/// Glushkov sets of a subexpression.
struct Sets {
    nullable: bool,
    first: BTreeSet<usize>,
    last: BTreeSet<usize>,
}

fn glushkov(re: &Re, follow: &mut Vec<BTreeSet<usize>>) -> Sets {
    match re {
        Re::Empty => Sets { nullable: true, first: BTreeSet::new(), last: BTreeSet::new() },
        Re::Pos(p) => Sets { nullable: false, first: [*p].into(), last: [*p].into() },
        Re::Opt(inner) => {
            let mut s = glushkov(inner, follow);
            s.nullable = true;
            s
        }
        Re::Star(inner) => {
            let s = glushkov(inner, follow);
            for &l in &s.last {
                follow[l].extend(s.first.iter().copied());
            }
            Sets { nullable: true, ..s }
        }
        Re::Alt(items) => {
            let mut out = Sets { nullable: items.is_empty(), first: BTreeSet::new(), last: BTreeSet::new() };
            for i in items {
                let s = glushkov(i, follow);
                out.nullable |= s.nullable;
                out.first.extend(s.first);
                out.last.extend(s.last);
            }
            out
        }
        Re::Cat(items) => {
            let mut out = Sets { nullable: true, first: BTreeSet::new(), last: BTreeSet::new() };
            for i in items {
                let s = glushkov(i, follow);
                for &l in &out.last {
                    follow[l].extend(s.first.iter().copied());
                }
                if out.nullable {
                    out.first.extend(s.first.iter().copied());
                }
                if s.nullable {
                    out.last.extend(s.last);
                } else {
                    out.last = s.last;
                }
                out.nullable &= s.nullable;
            }
            out
        }
    }
}

/// Compiles a particle into a DFA, refusing models that violate Unique Particle Attribution.
///
/// # Errors
/// A content model that violates Unique Particle Attribution, or one too large.
pub fn compile(p: &Particle) -> Result<Dfa, String> {
    let mut b = Builder { positions: Vec::new(), next_particle: 0 };
    let re = b.unroll(p, &mut HashMap::new())?;
    let mut follow = vec![BTreeSet::new(); b.positions.len()];
    let top = glushkov(&re, &mut follow);
    let positions = b.positions;

    // UPA: from any position set the automaton can be in, one name -> one particle.
    let upa = |set: &BTreeSet<usize>| -> Result<(), String> {
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for &p in set {
            let pos = &positions[p];
            let key = (pos.name.0.as_str(), pos.name.1.as_str());
            if let Some(&other) = seen.get(&key)
                && other != pos.particle
            {
                return Err(format!(
                    "content model is ambiguous for element {:?} (Unique Particle Attribution)",
                    pos.name.1
                ));
            }
            seen.insert(key, pos.particle);
        }
        Ok(())
    };
    upa(&top.first)?;
    for f in &follow {
        upa(f)?;
    }

    // Subset construction. A DFA state is a set of positions; the start state is the empty set
    // marker (usize::MAX) standing for "nothing read yet".
    const START: usize = usize::MAX;
    let mut index: HashMap<BTreeSet<usize>, usize> = HashMap::new();
    let mut sets: Vec<BTreeSet<usize>> = vec![[START].into()];
    index.insert([START].into(), 0);
    let mut dfa = Dfa::default();
    let mut i = 0;
    while i < sets.len() {
        let set = sets[i].clone();
        let accepting = set.iter().any(|&p| if p == START { top.nullable } else { top.last.contains(&p) });
        // Group successors by name.
        let mut by_name: Vec<((String, String), usize, BTreeSet<usize>)> = Vec::new();
        for &p in &set {
            let succ = if p == START { &top.first } else { &follow[p] };
            for &q in succ {
                let pos = &positions[q];
                match by_name.iter_mut().find(|(n, _, _)| *n == pos.name) {
                    Some((_, _, s)) => {
                        s.insert(q);
                    }
                    None => by_name.push((pos.name.clone(), pos.decl, [q].into())),
                }
            }
        }
        let mut state = DfaState { accepting, transitions: Vec::new() };
        for (name, decl, target) in by_name {
            let next = match index.get(&target) {
                Some(&n) => n,
                None => {
                    if sets.len() >= MAX_STATES {
                        return Err(format!("content model too large (over {MAX_STATES} states)"));
                    }
                    sets.push(target.clone());
                    index.insert(target, sets.len() - 1);
                    sets.len() - 1
                }
            };
            state.transitions.push((name.0, name.1, decl, next));
        }
        dfa.states.push(state);
        i += 1;
    }
    Ok(dfa)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(n: &str, decl: usize, min: u32, max: Option<u32>) -> Particle {
        Particle::Element { decl, name: (String::new(), n.to_owned()), min, max }
    }

    fn run(dfa: &Dfa, names: &[&str]) -> bool {
        let mut s = 0;
        for n in names {
            match dfa.step(s, "", n) {
                Some((_, next)) => s = next,
                None => return false,
            }
        }
        dfa.accepts(s)
    }

    #[test]
    fn sequences_choices_and_bounds() {
        let p = Particle::Sequence {
            items: vec![el("a", 0, 1, Some(1)), el("b", 1, 1, Some(4)), el("c", 2, 0, None)],
            min: 1,
            max: Some(1),
        };
        let d = compile(&p).unwrap();
        assert!(run(&d, &["a", "b"]));
        assert!(run(&d, &["a", "b", "b", "b", "b", "c", "c"]));
        assert!(!run(&d, &["a", "b", "b", "b", "b", "b"]));
        assert!(!run(&d, &["a"]));
        assert!(!run(&d, &["b"]));
        let ch = Particle::Choice { items: vec![el("x", 0, 1, Some(1)), el("y", 1, 1, Some(1))], min: 1, max: Some(2) };
        let d = compile(&ch).unwrap();
        assert!(run(&d, &["x", "y"]));
        assert!(!run(&d, &["x", "y", "x"]));
    }

    #[test]
    fn upa_violations_are_refused() {
        let p =
            Particle::Sequence { items: vec![el("a", 0, 0, Some(1)), el("a", 1, 1, Some(1))], min: 1, max: Some(1) };
        assert!(compile(&p).unwrap_err().contains("Unique Particle Attribution"));
        let c = Particle::Choice { items: vec![el("a", 0, 1, Some(1)), el("a", 1, 1, Some(1))], min: 1, max: Some(1) };
        assert!(compile(&c).is_err());
    }
}
