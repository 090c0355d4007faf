//! Custom g types: user structs that start with a [`GHeader`].

use crate::header::GHeader;

/// Identity and shape of a concrete g type. Each type that implements [`CustomG`] has exactly
/// one `GType` static, and its address is the type tag stamped into the header.
#[repr(C)]
#[derive(Debug)]
pub struct GType {
    /// The type's name, for dumps.
    pub name: &'static str,
    /// `size_of` the type.
    pub size: usize,
    /// `align_of` the type.
    pub align: usize,
}

/// A struct that is a valid g: `#[repr(C)]` with a [`GHeader`] as its first field.
///
/// Declare one with [`custom_g!`](crate::custom_g), which writes the `#[repr(C)]`, implements
/// this trait and checks at compile time that the header sits at offset 0.
///
/// # Safety
///
/// The implementing type must be `#[repr(C)]` with a `GHeader` at offset 0, so that a pointer
/// to the header is a pointer to the whole block, and [`CustomG::gtype`] must return the same
/// static on every call and a static that no other type returns.
pub unsafe trait CustomG: Sized + Send + Sync + 'static {
    /// The type tag of this g type.
    fn gtype() -> &'static GType;

    /// The header at the start of the block.
    fn header(&self) -> &GHeader {
        // SAFETY: the trait's contract puts a GHeader at offset 0 of a repr(C) struct.
        unsafe { &*(self as *const Self as *const GHeader) }
    }

    /// Returns the block that starts with `header` as `Self`, or `None` when the header was
    /// stamped with another type (or not stamped yet).
    fn from_header(header: &GHeader) -> Option<&Self> {
        if core::ptr::eq(header.gtype(), Self::gtype()) {
            // SAFETY: the runtime stamps a header with `Self::gtype()` only when it heads a
            // `Self` block, and the trait's contract puts the header at offset 0.
            Some(unsafe { &*(header as *const GHeader as *const Self) })
        } else {
            None
        }
    }
}

/// Declares a custom g type: a `#[repr(C)]` struct whose first field is a [`GHeader`].
///
/// The macro adds `#[repr(C)]`, implements [`CustomG`] with a unique type tag, and fails to
/// compile when the first field is not a `GHeader`.
///
/// ```
/// goro_abi::custom_g! {
///     /// A goroutine with a deadline, in nanoseconds since start.
///     pub struct DeadlineG {
///         pub header: goro_abi::GHeader,
///         pub deadline_ns: u64,
///     }
/// }
/// ```
///
/// A struct whose first field is not the header does not compile:
///
/// ```compile_fail
/// goro_abi::custom_g! {
///     pub struct Misordered {
///         pub priority: u8,
///         pub header: goro_abi::GHeader,
///     }
/// }
/// ```
///
/// Nor does one whose first field only points to a header, which a reference to the field
/// would reach through deref coercion:
///
/// ```compile_fail,E0308
/// goro_abi::custom_g! {
///     pub struct Boxed {
///         pub header: Box<goro_abi::GHeader>,
///     }
/// }
/// ```
#[macro_export]
macro_rules! custom_g {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(#[$hmeta:meta])*
            $hvis:vis $header:ident : $htype:ty
            $(, $(#[$fmeta:meta])* $fvis:vis $field:ident : $ftype:ty)* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $(#[$hmeta])*
            $hvis $header: $htype,
            $($(#[$fmeta])* $fvis $field: $ftype,)*
        }

        const _: () = {
            // The first field must be the header itself, at offset 0. The field is moved, not
            // borrowed, because a borrow would pass a `Box<GHeader>` by deref coercion.
            let _ = |header: $htype| -> $crate::GHeader { header };
            assert!(
                $crate::__memoffset::offset_of!($name, $header) == 0,
                "custom_g!: the GHeader must be the first field"
            );
        };

        // SAFETY: the struct is repr(C), its first field is a GHeader (both checked above), and
        // the GType static is unique to this impl.
        unsafe impl $crate::CustomG for $name {
            fn gtype() -> &'static $crate::GType {
                static GTYPE: $crate::GType = $crate::GType {
                    name: ::core::stringify!($name),
                    size: ::core::mem::size_of::<$name>(),
                    align: ::core::mem::align_of::<$name>(),
                };
                &GTYPE
            }
        }
    };
}
