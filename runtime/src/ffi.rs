//! `#[repr(C)]` declarations of the subset of the PJRT C API (header version 0.81) that this
//! crate calls. Nothing outside `api`, `client`, `buffer` and `executable` should touch these.
//!
//! Every argument struct starts with `struct_size`; plugins reject structs smaller than they
//! expect, so each struct gets a [`PjrtStruct::new`] that zeroes it and fills `struct_size`
//! with the same value as the header's `<name>_STRUCT_SIZE` (end of the last field). The
//! `layout` integration test compares every offset and size here with the real header
//! compiled by `gcc`.
//!
//! C enums are declared as `i32` plus constants, so a value the plugin adds later can never
//! produce an invalid Rust enum.

#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]

use std::ffi::{c_char, c_int, c_void};
use std::mem::{offset_of, size_of};

/// Header version these declarations follow.
pub const HEADER_API_MAJOR: i32 = 0;
pub const HEADER_API_MINOR: i32 = 81;

// ----------------------------------------------------------------------------- opaque types

macro_rules! opaque {
    ($($name:ident),* $(,)?) => {
        $(
            /// Opaque plugin-owned object; only ever used behind a pointer.
            #[repr(C)]
            pub struct $name {
                _private: [u8; 0],
            }
        )*
    };
}

opaque!(
    PJRT_Error,
    PJRT_Event,
    PJRT_Client,
    PJRT_Device,
    PJRT_DeviceDescription,
    PJRT_Memory,
    PJRT_Executable,
    PJRT_LoadedExecutable,
    PJRT_Buffer,
    PJRT_SerializedExecutable,
    PJRT_ExecuteContext,
);

// ----------------------------------------------------------------------------- enums

pub type PJRT_Error_Code = c_int;
pub const PJRT_ERROR_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub type PJRT_NamedValue_Type = c_int;
pub const PJRT_NamedValue_kString: PJRT_NamedValue_Type = 0;
pub const PJRT_NamedValue_kInt64: PJRT_NamedValue_Type = 1;
pub const PJRT_NamedValue_kInt64List: PJRT_NamedValue_Type = 2;
pub const PJRT_NamedValue_kFloat: PJRT_NamedValue_Type = 3;
pub const PJRT_NamedValue_kBool: PJRT_NamedValue_Type = 4;

pub type PJRT_Buffer_Type = c_int;
pub const PJRT_Buffer_Type_INVALID: PJRT_Buffer_Type = 0;
pub const PJRT_Buffer_Type_PRED: PJRT_Buffer_Type = 1;
pub const PJRT_Buffer_Type_S8: PJRT_Buffer_Type = 2;
pub const PJRT_Buffer_Type_S16: PJRT_Buffer_Type = 3;
pub const PJRT_Buffer_Type_S32: PJRT_Buffer_Type = 4;
pub const PJRT_Buffer_Type_S64: PJRT_Buffer_Type = 5;
pub const PJRT_Buffer_Type_U8: PJRT_Buffer_Type = 6;
pub const PJRT_Buffer_Type_U16: PJRT_Buffer_Type = 7;
pub const PJRT_Buffer_Type_U32: PJRT_Buffer_Type = 8;
pub const PJRT_Buffer_Type_U64: PJRT_Buffer_Type = 9;
pub const PJRT_Buffer_Type_F16: PJRT_Buffer_Type = 10;
pub const PJRT_Buffer_Type_F32: PJRT_Buffer_Type = 11;
pub const PJRT_Buffer_Type_F64: PJRT_Buffer_Type = 12;
pub const PJRT_Buffer_Type_BF16: PJRT_Buffer_Type = 13;

pub type PJRT_Buffer_MemoryLayout_Type = c_int;
pub const PJRT_Buffer_MemoryLayout_Type_Tiled: PJRT_Buffer_MemoryLayout_Type = 0;
pub const PJRT_Buffer_MemoryLayout_Type_Strides: PJRT_Buffer_MemoryLayout_Type = 1;

pub type PJRT_HostBufferSemantics = c_int;
pub const PJRT_HostBufferSemantics_kImmutableOnlyDuringCall: PJRT_HostBufferSemantics = 0;
pub const PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes: PJRT_HostBufferSemantics = 1;

// ----------------------------------------------------------------------------- function types

/// A PJRT entry point taking one argument struct and returning an error (null = success).
pub type PjrtFn<A> = Option<unsafe extern "C" fn(args: *mut A) -> *mut PJRT_Error>;
/// An entry point that returns nothing (the two error helpers).
pub type PjrtVoidFn<A> = Option<unsafe extern "C" fn(args: *mut A)>;
/// A table slot this crate never calls; only its size matters.
pub type Unused = Option<unsafe extern "C" fn()>;

pub type SerializedExecutableDeleter =
    Option<unsafe extern "C" fn(exec: *mut PJRT_SerializedExecutable)>;

// ----------------------------------------------------------------------------- layouts

/// Size and field offsets of one declared struct, for the layout test.
#[derive(Clone, Debug)]
pub struct StructLayout {
    pub name: &'static str,
    /// `sizeof` (with trailing padding).
    pub size: usize,
    /// The header's `<name>_STRUCT_SIZE`: end of the last field.
    pub struct_size: usize,
    /// True when only a prefix of the C struct is declared (the function table).
    pub prefix_only: bool,
    pub fields: Vec<(&'static str, usize)>,
}

/// Argument structs: zero-initialised with `struct_size` filled in.
pub trait PjrtStruct: Sized {
    /// The header's `<name>_STRUCT_SIZE`.
    const STRUCT_SIZE: usize;
    fn new() -> Self;
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

macro_rules! c_structs {
    ($(
        $(#[doc = $doc:literal])*
        struct $name:ident { struct_size: usize, $($field:ident : $ty:ty),* $(,)? }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[repr(C)]
            #[derive(Clone, Copy)]
            pub struct $name {
                pub struct_size: usize,
                $(pub $field: $ty),*
            }

            impl PjrtStruct for $name {
                const STRUCT_SIZE: usize = {
                    let end = size_of::<usize>();
                    $(let end = max(end, offset_of!($name, $field) + size_of::<$ty>());)*
                    end
                };
                fn new() -> Self {
                    // SAFETY: every field is an integer, bool, raw pointer, `Option` of a
                    // function pointer or a union of those; all-zero is valid for each.
                    let mut s: Self = unsafe { std::mem::zeroed() };
                    s.struct_size = Self::STRUCT_SIZE;
                    s
                }
            }
        )*

        /// Layouts of every argument struct declared in this module.
        fn args_layouts() -> Vec<StructLayout> {
            vec![$(
                StructLayout {
                    name: stringify!($name),
                    size: size_of::<$name>(),
                    struct_size: <$name as PjrtStruct>::STRUCT_SIZE,
                    prefix_only: false,
                    fields: vec![
                        ("struct_size", offset_of!($name, struct_size)),
                        $((stringify!($field), offset_of!($name, $field))),*
                    ],
                }
            ),*]
        }
    };
}

/// The value of a [`PJRT_NamedValue`]; which member is valid depends on its `type_`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union PJRT_NamedValue_Value {
    pub string_value: *const c_char,
    pub int64_value: i64,
    pub int64_array_value: *const i64,
    pub float_value: f32,
    pub bool_value: bool,
}

/// The two layout kinds of [`PJRT_Buffer_MemoryLayout`], selected by its `type_`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union PJRT_Buffer_MemoryLayout_Union {
    pub tiled: PJRT_Buffer_MemoryLayout_Tiled,
    pub strides: PJRT_Buffer_MemoryLayout_Strides,
}

c_structs! {
    struct PJRT_Extension_Base { struct_size: usize, type_: c_int, next: *mut PJRT_Extension_Base }
    struct PJRT_Api_Version {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        major_version: c_int,
        minor_version: c_int,
    }
    struct PJRT_Error_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        error: *mut PJRT_Error,
    }
    struct PJRT_Error_Message_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        error: *const PJRT_Error,
        message: *const c_char,
        message_size: usize,
    }
    struct PJRT_Error_GetCode_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        error: *const PJRT_Error,
        code: PJRT_Error_Code,
    }
    /// A key-value option (client create options, plugin attributes).
    struct PJRT_NamedValue {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        name: *const c_char,
        name_size: usize,
        type_: PJRT_NamedValue_Type,
        value: PJRT_NamedValue_Value,
        value_size: usize,
    }
    struct PJRT_Plugin_Initialize_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
    }
    struct PJRT_Plugin_Attributes_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        attributes: *const PJRT_NamedValue,
        num_attributes: usize,
    }
    struct PJRT_Event_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        event: *mut PJRT_Event,
    }
    struct PJRT_Event_Await_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        event: *mut PJRT_Event,
    }
    struct PJRT_Client_Create_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        create_options: *const PJRT_NamedValue,
        num_options: usize,
        kv_get_callback: *mut c_void,
        kv_get_user_arg: *mut c_void,
        kv_put_callback: *mut c_void,
        kv_put_user_arg: *mut c_void,
        client: *mut PJRT_Client,
        kv_try_get_callback: *mut c_void,
        kv_try_get_user_arg: *mut c_void,
    }
    struct PJRT_Client_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
    }
    struct PJRT_Client_PlatformName_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        platform_name: *const c_char,
        platform_name_size: usize,
    }
    struct PJRT_Client_PlatformVersion_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        platform_version: *const c_char,
        platform_version_size: usize,
    }
    struct PJRT_Client_Devices_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        devices: *const *mut PJRT_Device,
        num_devices: usize,
    }
    struct PJRT_Client_AddressableDevices_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        addressable_devices: *const *mut PJRT_Device,
        num_addressable_devices: usize,
    }
    /// A program handed to the compiler (in) or read back from an executable (out).
    struct PJRT_Program {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        code: *mut c_char,
        code_size: usize,
        format: *const c_char,
        format_size: usize,
    }
    struct PJRT_Client_Compile_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        program: *const PJRT_Program,
        compile_options: *const c_char,
        compile_options_size: usize,
        executable: *mut PJRT_LoadedExecutable,
    }
    struct PJRT_Client_BufferFromHostBuffer_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        data: *const c_void,
        type_: PJRT_Buffer_Type,
        dims: *const i64,
        num_dims: usize,
        byte_strides: *const i64,
        num_byte_strides: usize,
        host_buffer_semantics: PJRT_HostBufferSemantics,
        device: *mut PJRT_Device,
        memory: *mut PJRT_Memory,
        device_layout: *mut c_void,
        done_with_host_buffer: *mut PJRT_Event,
        buffer: *mut PJRT_Buffer,
    }
    struct PJRT_DeviceDescription_Id_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device_description: *mut PJRT_DeviceDescription,
        id: c_int,
    }
    struct PJRT_DeviceDescription_Kind_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device_description: *mut PJRT_DeviceDescription,
        device_kind: *const c_char,
        device_kind_size: usize,
    }
    struct PJRT_DeviceDescription_DebugString_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device_description: *mut PJRT_DeviceDescription,
        debug_string: *const c_char,
        debug_string_size: usize,
    }
    struct PJRT_Device_GetDescription_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device: *mut PJRT_Device,
        device_description: *mut PJRT_DeviceDescription,
    }
    struct PJRT_Device_IsAddressable_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device: *mut PJRT_Device,
        is_addressable: bool,
    }
    struct PJRT_Device_LocalHardwareId_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device: *mut PJRT_Device,
        local_hardware_id: c_int,
    }
    struct PJRT_Executable_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
    }
    struct PJRT_LoadedExecutable_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_LoadedExecutable,
    }
    struct PJRT_LoadedExecutable_GetExecutable_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        loaded_executable: *mut PJRT_LoadedExecutable,
        executable: *mut PJRT_Executable,
    }
    struct PJRT_Executable_Name_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        executable_name: *const c_char,
        executable_name_size: usize,
    }
    struct PJRT_Executable_NumReplicas_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_replicas: usize,
    }
    struct PJRT_Executable_NumPartitions_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_partitions: usize,
    }
    struct PJRT_LoadedExecutable_AddressableDevices_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_LoadedExecutable,
        addressable_devices: *const *mut PJRT_Device,
        num_addressable_devices: usize,
    }
    struct PJRT_Executable_OptimizedProgram_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        program: *mut PJRT_Program,
    }
    /// Options of one execution; only `non_donatable_input_indices` is used here.
    struct PJRT_ExecuteOptions {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        send_callbacks: *mut *mut c_void,
        recv_callbacks: *mut *mut c_void,
        num_send_ops: usize,
        num_recv_ops: usize,
        launch_id: c_int,
        non_donatable_input_indices: *const i64,
        num_non_donatable_input_indices: usize,
        context: *mut PJRT_ExecuteContext,
        call_location: *const c_char,
        num_tasks: usize,
        task_ids: *mut c_int,
        incarnation_ids: *mut i64,
    }
    struct PJRT_LoadedExecutable_Execute_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_LoadedExecutable,
        options: *mut PJRT_ExecuteOptions,
        argument_lists: *const *const *mut PJRT_Buffer,
        num_devices: usize,
        num_args: usize,
        output_lists: *const *mut *mut PJRT_Buffer,
        device_complete_events: *mut *mut PJRT_Event,
        execute_device: *mut PJRT_Device,
    }
    struct PJRT_Executable_NumOutputs_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_outputs: usize,
    }
    struct PJRT_Executable_Serialize_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *const PJRT_Executable,
        serialized_bytes: *const c_char,
        serialized_bytes_size: usize,
        serialized_executable: *mut PJRT_SerializedExecutable,
        serialized_executable_deleter: SerializedExecutableDeleter,
    }
    struct PJRT_Executable_DeserializeAndLoad_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        serialized_executable: *const c_char,
        serialized_executable_size: usize,
        loaded_executable: *mut PJRT_LoadedExecutable,
        overridden_serialized_compile_options: *const c_char,
        overridden_serialized_compile_options_size: usize,
    }
    struct PJRT_Buffer_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
    }
    struct PJRT_Buffer_ElementType_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        type_: PJRT_Buffer_Type,
    }
    struct PJRT_Buffer_Dimensions_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        dims: *const i64,
        num_dims: usize,
    }
    struct PJRT_Buffer_Device_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        device: *mut PJRT_Device,
    }
    struct PJRT_Buffer_Delete_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
    }
    struct PJRT_Buffer_IsDeleted_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        is_deleted: bool,
    }
    struct PJRT_Buffer_ToHostBuffer_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        src: *mut PJRT_Buffer,
        host_layout: *mut PJRT_Buffer_MemoryLayout,
        dst: *mut c_void,
        dst_size: usize,
        event: *mut PJRT_Event,
    }
    /// A dense layout: `minor_to_major` dimension order, optional tiles (unused here).
    struct PJRT_Buffer_MemoryLayout_Tiled {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        minor_to_major: *const i64,
        minor_to_major_size: usize,
        tile_dims: *const i64,
        tile_dim_sizes: *const usize,
        num_tiles: usize,
    }
    struct PJRT_Buffer_MemoryLayout_Strides {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        byte_strides: *const i64,
        num_byte_strides: usize,
    }
    struct PJRT_Buffer_MemoryLayout {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        layout: PJRT_Buffer_MemoryLayout_Union,
        type_: PJRT_Buffer_MemoryLayout_Type,
    }
    struct PJRT_Buffer_ReadyEvent_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        event: *mut PJRT_Event,
    }
}

/// The plugin's function table, declared up to the last entry this crate calls
/// (`PJRT_Buffer_ReadyEvent`). Before calling an entry, [`crate::api`] checks that the
/// plugin's `struct_size` reaches it. Field names are the C names so the layout test can
/// compare them one to one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PJRT_Api {
    pub struct_size: usize,
    pub extension_start: *mut PJRT_Extension_Base,
    pub pjrt_api_version: PJRT_Api_Version,
    pub PJRT_Error_Destroy: PjrtVoidFn<PJRT_Error_Destroy_Args>,
    pub PJRT_Error_Message: PjrtVoidFn<PJRT_Error_Message_Args>,
    pub PJRT_Error_GetCode: PjrtFn<PJRT_Error_GetCode_Args>,
    pub PJRT_Plugin_Initialize: PjrtFn<PJRT_Plugin_Initialize_Args>,
    pub PJRT_Plugin_Attributes: PjrtFn<PJRT_Plugin_Attributes_Args>,
    pub PJRT_Event_Destroy: PjrtFn<PJRT_Event_Destroy_Args>,
    pub PJRT_Event_IsReady: Unused,
    pub PJRT_Event_Error: Unused,
    pub PJRT_Event_Await: PjrtFn<PJRT_Event_Await_Args>,
    pub PJRT_Event_OnReady: Unused,
    pub PJRT_Client_Create: PjrtFn<PJRT_Client_Create_Args>,
    pub PJRT_Client_Destroy: PjrtFn<PJRT_Client_Destroy_Args>,
    pub PJRT_Client_PlatformName: PjrtFn<PJRT_Client_PlatformName_Args>,
    pub PJRT_Client_ProcessIndex: Unused,
    pub PJRT_Client_PlatformVersion: PjrtFn<PJRT_Client_PlatformVersion_Args>,
    pub PJRT_Client_Devices: PjrtFn<PJRT_Client_Devices_Args>,
    pub PJRT_Client_AddressableDevices: PjrtFn<PJRT_Client_AddressableDevices_Args>,
    pub PJRT_Client_LookupDevice: Unused,
    pub PJRT_Client_LookupAddressableDevice: Unused,
    pub PJRT_Client_AddressableMemories: Unused,
    pub PJRT_Client_Compile: PjrtFn<PJRT_Client_Compile_Args>,
    pub PJRT_Client_DefaultDeviceAssignment: Unused,
    pub PJRT_Client_BufferFromHostBuffer: PjrtFn<PJRT_Client_BufferFromHostBuffer_Args>,
    pub PJRT_DeviceDescription_Id: PjrtFn<PJRT_DeviceDescription_Id_Args>,
    pub PJRT_DeviceDescription_ProcessIndex: Unused,
    pub PJRT_DeviceDescription_Attributes: Unused,
    pub PJRT_DeviceDescription_Kind: PjrtFn<PJRT_DeviceDescription_Kind_Args>,
    pub PJRT_DeviceDescription_DebugString: PjrtFn<PJRT_DeviceDescription_DebugString_Args>,
    pub PJRT_DeviceDescription_ToString: Unused,
    pub PJRT_Device_GetDescription: PjrtFn<PJRT_Device_GetDescription_Args>,
    pub PJRT_Device_IsAddressable: PjrtFn<PJRT_Device_IsAddressable_Args>,
    pub PJRT_Device_LocalHardwareId: PjrtFn<PJRT_Device_LocalHardwareId_Args>,
    pub PJRT_Device_AddressableMemories: Unused,
    pub PJRT_Device_DefaultMemory: Unused,
    pub PJRT_Device_MemoryStats: Unused,
    pub PJRT_Memory_Id: Unused,
    pub PJRT_Memory_Kind: Unused,
    pub PJRT_Memory_DebugString: Unused,
    pub PJRT_Memory_ToString: Unused,
    pub PJRT_Memory_AddressableByDevices: Unused,
    pub PJRT_Executable_Destroy: PjrtFn<PJRT_Executable_Destroy_Args>,
    pub PJRT_Executable_Name: PjrtFn<PJRT_Executable_Name_Args>,
    pub PJRT_Executable_NumReplicas: PjrtFn<PJRT_Executable_NumReplicas_Args>,
    pub PJRT_Executable_NumPartitions: PjrtFn<PJRT_Executable_NumPartitions_Args>,
    pub PJRT_Executable_NumOutputs: PjrtFn<PJRT_Executable_NumOutputs_Args>,
    pub PJRT_Executable_SizeOfGeneratedCodeInBytes: Unused,
    pub PJRT_Executable_GetCostAnalysis: Unused,
    pub PJRT_Executable_OutputMemoryKinds: Unused,
    pub PJRT_Executable_OptimizedProgram: PjrtFn<PJRT_Executable_OptimizedProgram_Args>,
    pub PJRT_Executable_Serialize: PjrtFn<PJRT_Executable_Serialize_Args>,
    pub PJRT_LoadedExecutable_Destroy: PjrtFn<PJRT_LoadedExecutable_Destroy_Args>,
    pub PJRT_LoadedExecutable_GetExecutable: PjrtFn<PJRT_LoadedExecutable_GetExecutable_Args>,
    pub PJRT_LoadedExecutable_AddressableDevices:
        PjrtFn<PJRT_LoadedExecutable_AddressableDevices_Args>,
    pub PJRT_LoadedExecutable_Delete: Unused,
    pub PJRT_LoadedExecutable_IsDeleted: Unused,
    pub PJRT_LoadedExecutable_Execute: PjrtFn<PJRT_LoadedExecutable_Execute_Args>,
    pub PJRT_Executable_DeserializeAndLoad: PjrtFn<PJRT_Executable_DeserializeAndLoad_Args>,
    pub PJRT_LoadedExecutable_Fingerprint: Unused,
    pub PJRT_Buffer_Destroy: PjrtFn<PJRT_Buffer_Destroy_Args>,
    pub PJRT_Buffer_ElementType: PjrtFn<PJRT_Buffer_ElementType_Args>,
    pub PJRT_Buffer_Dimensions: PjrtFn<PJRT_Buffer_Dimensions_Args>,
    pub PJRT_Buffer_UnpaddedDimensions: Unused,
    pub PJRT_Buffer_DynamicDimensionIndices: Unused,
    pub PJRT_Buffer_GetMemoryLayout: Unused,
    pub PJRT_Buffer_OnDeviceSizeInBytes: Unused,
    pub PJRT_Buffer_Device: PjrtFn<PJRT_Buffer_Device_Args>,
    pub PJRT_Buffer_Memory: Unused,
    pub PJRT_Buffer_Delete: PjrtFn<PJRT_Buffer_Delete_Args>,
    pub PJRT_Buffer_IsDeleted: PjrtFn<PJRT_Buffer_IsDeleted_Args>,
    pub PJRT_Buffer_CopyToDevice: Unused,
    pub PJRT_Buffer_ToHostBuffer: PjrtFn<PJRT_Buffer_ToHostBuffer_Args>,
    pub PJRT_Buffer_IsOnCpu: Unused,
    pub PJRT_Buffer_ReadyEvent: PjrtFn<PJRT_Buffer_ReadyEvent_Args>,
}

/// Lists the function-table fields with their offsets (used by the layout test).
macro_rules! api_fields {
    ($($f:ident),* $(,)?) => {
        vec![$((stringify!($f), offset_of!(PJRT_Api, $f))),*]
    };
}

fn api_layout() -> StructLayout {
    let fields = api_fields!(
        struct_size,
        extension_start,
        pjrt_api_version,
        PJRT_Error_Destroy,
        PJRT_Error_Message,
        PJRT_Error_GetCode,
        PJRT_Plugin_Initialize,
        PJRT_Plugin_Attributes,
        PJRT_Event_Destroy,
        PJRT_Event_IsReady,
        PJRT_Event_Error,
        PJRT_Event_Await,
        PJRT_Event_OnReady,
        PJRT_Client_Create,
        PJRT_Client_Destroy,
        PJRT_Client_PlatformName,
        PJRT_Client_ProcessIndex,
        PJRT_Client_PlatformVersion,
        PJRT_Client_Devices,
        PJRT_Client_AddressableDevices,
        PJRT_Client_LookupDevice,
        PJRT_Client_LookupAddressableDevice,
        PJRT_Client_AddressableMemories,
        PJRT_Client_Compile,
        PJRT_Client_DefaultDeviceAssignment,
        PJRT_Client_BufferFromHostBuffer,
        PJRT_DeviceDescription_Id,
        PJRT_DeviceDescription_ProcessIndex,
        PJRT_DeviceDescription_Attributes,
        PJRT_DeviceDescription_Kind,
        PJRT_DeviceDescription_DebugString,
        PJRT_DeviceDescription_ToString,
        PJRT_Device_GetDescription,
        PJRT_Device_IsAddressable,
        PJRT_Device_LocalHardwareId,
        PJRT_Device_AddressableMemories,
        PJRT_Device_DefaultMemory,
        PJRT_Device_MemoryStats,
        PJRT_Memory_Id,
        PJRT_Memory_Kind,
        PJRT_Memory_DebugString,
        PJRT_Memory_ToString,
        PJRT_Memory_AddressableByDevices,
        PJRT_Executable_Destroy,
        PJRT_Executable_Name,
        PJRT_Executable_NumReplicas,
        PJRT_Executable_NumPartitions,
        PJRT_Executable_NumOutputs,
        PJRT_Executable_SizeOfGeneratedCodeInBytes,
        PJRT_Executable_GetCostAnalysis,
        PJRT_Executable_OutputMemoryKinds,
        PJRT_Executable_OptimizedProgram,
        PJRT_Executable_Serialize,
        PJRT_LoadedExecutable_Destroy,
        PJRT_LoadedExecutable_GetExecutable,
        PJRT_LoadedExecutable_AddressableDevices,
        PJRT_LoadedExecutable_Delete,
        PJRT_LoadedExecutable_IsDeleted,
        PJRT_LoadedExecutable_Execute,
        PJRT_Executable_DeserializeAndLoad,
        PJRT_LoadedExecutable_Fingerprint,
        PJRT_Buffer_Destroy,
        PJRT_Buffer_ElementType,
        PJRT_Buffer_Dimensions,
        PJRT_Buffer_UnpaddedDimensions,
        PJRT_Buffer_DynamicDimensionIndices,
        PJRT_Buffer_GetMemoryLayout,
        PJRT_Buffer_OnDeviceSizeInBytes,
        PJRT_Buffer_Device,
        PJRT_Buffer_Memory,
        PJRT_Buffer_Delete,
        PJRT_Buffer_IsDeleted,
        PJRT_Buffer_CopyToDevice,
        PJRT_Buffer_ToHostBuffer,
        PJRT_Buffer_IsOnCpu,
        PJRT_Buffer_ReadyEvent,
    );
    StructLayout {
        name: "PJRT_Api",
        size: size_of::<PJRT_Api>(),
        struct_size: size_of::<PJRT_Api>(),
        prefix_only: true,
        fields,
    }
}

/// Every struct declared in this module with its Rust layout. The layout test prints the
/// same facts from the C header and compares. Fields whose Rust name differs from C
/// (`type` is a Rust keyword, the anonymous union) are renamed by [`c_field_name`].
pub fn declared_layouts() -> Vec<StructLayout> {
    let mut all = args_layouts();
    all.push(api_layout());
    all
}

/// The C spelling of a field declared here.
pub fn c_field_name<'a>(struct_name: &str, rust_field: &'a str) -> &'a str {
    match (struct_name, rust_field) {
        (_, "type_") => "type",
        ("PJRT_NamedValue", "value") => "int64_value",
        ("PJRT_Buffer_MemoryLayout", "layout") => "tiled",
        _ => rust_field,
    }
}
