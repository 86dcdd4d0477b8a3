// Filled in by the layout op family.
export {};
