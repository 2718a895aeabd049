//! The syntax of a subquery: `sqlparser`'s `Query` read down to the one form the language
//! accepts, `SELECT [DISTINCT] columns FROM table [alias] [WHERE condition]`, refusing every
//! other construct by name; and the names of the tables a `where`'s subqueries read.

use sqlparser::ast::{
    Distinct, Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    ObjectName, ObjectNamePart, Query, Select, SelectFlavor, SelectItem, SetExpr, TableFactor,
};

use super::error::WhereError;
use super::typecheck::fold_ident;
use crate::schema::QualifiedName;

/// What every refusal says is supported.
pub(crate) const SUPPORTED: &str =
    "a subquery may only be (SELECT [DISTINCT] columns FROM table [alias] [WHERE condition])";

fn refuse<T>(what: &str) -> Result<T, WhereError> {
    Err(WhereError::invalid(format!(
        "{what} is not supported in a subquery; {SUPPORTED}"
    )))
}

/// The parts of an accepted subquery.
pub(crate) struct SubqueryParts<'q> {
    pub table: QualifiedName,
    /// The alias (`FROM members m`), folded.
    pub alias: Option<String>,
    pub projection: &'q [SelectItem],
    pub selection: Option<&'q SqlExpr>,
}

/// Reads `query` as `SELECT [DISTINCT] … FROM table [alias] [WHERE …]`.
pub(crate) fn subquery_parts(query: &Query) -> Result<SubqueryParts<'_>, WhereError> {
    if query.with.is_some() {
        return refuse("WITH");
    }
    if query.order_by.is_some() {
        return refuse("ORDER BY");
    }
    if query.limit_clause.is_some() {
        return refuse("LIMIT/OFFSET");
    }
    if query.fetch.is_some() {
        return refuse("FETCH");
    }
    if !query.locks.is_empty() {
        return refuse("FOR UPDATE/SHARE");
    }
    if query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return refuse("this query form");
    }
    let select = match query.body.as_ref() {
        SetExpr::Select(select) => select,
        SetExpr::Query(inner) => return subquery_parts(inner),
        SetExpr::SetOperation { .. } => return refuse("UNION/INTERSECT/EXCEPT"),
        SetExpr::Values(_) => return refuse("VALUES"),
        SetExpr::Table(_) => return refuse("TABLE"),
        _ => return refuse("a statement"),
    };
    select_parts(select)
}

fn select_parts(select: &Select) -> Result<SubqueryParts<'_>, WhereError> {
    match &select.distinct {
        None | Some(Distinct::Distinct | Distinct::All) => {}
        Some(_) => return refuse("DISTINCT ON"),
    }
    match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if exprs.is_empty() && modifiers.is_empty() => {}
        _ => return refuse("GROUP BY"),
    }
    if select.having.is_some() {
        return refuse("HAVING");
    }
    if select.into.is_some() {
        return refuse("SELECT INTO");
    }
    if !select.named_window.is_empty() || select.qualify.is_some() {
        return refuse("WINDOW");
    }
    if select.top.is_some()
        || select.exclude.is_some()
        || select.select_modifiers.is_some()
        || !select.optimizer_hints.is_empty()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || select.value_table_mode.is_some()
        || !matches!(select.flavor, SelectFlavor::Standard)
    {
        return refuse("this SELECT form");
    }
    let from = match select.from.as_slice() {
        [] => {
            return Err(WhereError::invalid(format!(
                "a subquery needs FROM a table; {SUPPORTED}"
            )));
        }
        [one] => one,
        _ => return refuse("reading several tables (FROM a, b)"),
    };
    if !from.joins.is_empty() {
        return refuse("JOIN");
    }
    let (name, alias) = match &from.relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
            (name, alias)
        }
        TableFactor::Table { args: Some(_), .. } | TableFactor::Function { .. } => {
            return refuse("a function in FROM");
        }
        TableFactor::Derived { .. } => return refuse("a subquery in FROM"),
        _ => return refuse("this FROM item"),
    };
    let alias = match alias {
        None => None,
        Some(a) if a.columns.is_empty() => Some(fold_ident(&a.name)),
        Some(_) => return refuse("a column alias list in FROM"),
    };
    Ok(SubqueryParts {
        table: table_name(name)?,
        alias,
        projection: &select.projection,
        selection: select.selection.as_ref(),
    })
}

/// `table` or `schema.table`, folded as Postgres folds names; `public` when unqualified.
pub(crate) fn table_name(name: &ObjectName) -> Result<QualifiedName, WhereError> {
    let parts = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(fold_ident(i)),
            ObjectNamePart::Function(_) => None,
        })
        .collect::<Option<Vec<_>>>();
    match parts.as_deref() {
        Some([table]) => Ok(QualifiedName::new("public", table.as_str())),
        Some([schema, table]) => Ok(QualifiedName::new(schema.as_str(), table.as_str())),
        _ => Err(WhereError::invalid(format!(
            "table name {name} in a subquery must be table or schema.table"
        ))),
    }
}

/// The tables named by the subqueries in `e`, at any depth, each once, in order of appearance.
pub(crate) fn tables_named(e: &SqlExpr) -> Vec<QualifiedName> {
    let mut names = Vec::new();
    collect_expr(e, &mut names, 0);
    names
}

/// Deeper than this the walk stops (the checker refuses such a `where` anyway).
const MAX_WALK_DEPTH: usize = 200;

fn collect_query(q: &Query, out: &mut Vec<QualifiedName>, depth: usize) {
    collect_set_expr(&q.body, out, depth + 1);
}

fn collect_set_expr(body: &SetExpr, out: &mut Vec<QualifiedName>, depth: usize) {
    if depth > MAX_WALK_DEPTH {
        return;
    }
    match body {
        SetExpr::Select(select) => {
            for from in &select.from {
                if let TableFactor::Table { name, .. } = &from.relation
                    && let Ok(name) = table_name(name)
                    && !out.contains(&name)
                {
                    out.push(name);
                }
            }
            for item in &select.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                {
                    collect_expr(e, out, depth + 1);
                }
            }
            if let Some(w) = &select.selection {
                collect_expr(w, out, depth + 1);
            }
        }
        SetExpr::Query(q) => collect_query(q, out, depth + 1),
        SetExpr::SetOperation { left, right, .. } => {
            collect_set_expr(left, out, depth + 1);
            collect_set_expr(right, out, depth + 1);
        }
        _ => {}
    }
}

/// Walks the expression forms the language accepts (any other is refused by the checker
/// before a subquery inside it matters).
fn collect_expr(e: &SqlExpr, out: &mut Vec<QualifiedName>, depth: usize) {
    use SqlExpr as E;
    if depth > MAX_WALK_DEPTH {
        return;
    }
    let mut walk = |x: &SqlExpr| collect_expr(x, out, depth + 1);
    match e {
        E::InSubquery { expr, subquery, .. } => {
            walk(expr);
            collect_query(subquery, out, depth + 1);
        }
        E::Exists { subquery, .. } | E::Subquery(subquery) => {
            collect_query(subquery, out, depth + 1)
        }
        E::BinaryOp { left, right, .. }
        | E::IsDistinctFrom(left, right)
        | E::IsNotDistinctFrom(left, right) => {
            walk(left);
            walk(right);
        }
        E::AnyOp { left, right, .. } | E::AllOp { left, right, .. } => {
            walk(left);
            walk(right);
        }
        E::UnaryOp { expr, .. }
        | E::Nested(expr)
        | E::IsNull(expr)
        | E::IsNotNull(expr)
        | E::IsUnknown(expr)
        | E::IsNotUnknown(expr)
        | E::IsTrue(expr)
        | E::IsNotTrue(expr)
        | E::IsFalse(expr)
        | E::IsNotFalse(expr)
        | E::Cast { expr, .. } => walk(expr),
        E::InList { expr, list, .. } => {
            walk(expr);
            list.iter().for_each(walk);
        }
        E::Between {
            expr, low, high, ..
        } => {
            walk(expr);
            walk(low);
            walk(high);
        }
        E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => {
            walk(expr);
            walk(pattern);
        }
        E::Tuple(items) => items.iter().for_each(walk),
        E::Array(arr) => arr.elem.iter().for_each(walk),
        E::Function(f) => {
            if let FunctionArguments::List(list) = &f.args {
                for arg in &list.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::Expr(x),
                        ..
                    } = arg
                    {
                        walk(x);
                    }
                }
            }
        }
        _ => {}
    }
}
