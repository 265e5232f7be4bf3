-- Indexes for the auditors' queries on audit.events (issue 6 item 2, R-PLT-4).
-- `tsunagi audit journey CUSTOMER` finds a customer's events in every service in two ways:
-- streams whose id IS the customer number (customer-, secretq-, otpcust-, mailotp-, ...) and
-- events of other streams (otpapp-, phoneverif-, mail-, ...) whose data names the customer.
-- audit.events is a plain view, so the planner applies these expression indexes through it
-- when a query uses the same expressions. Re-running this file is harmless.

CREATE INDEX IF NOT EXISTS events_stream_id_idx
    ON eventstore.events ((substr(stream_name, strpos(stream_name, '-') + 1)));
CREATE INDEX IF NOT EXISTS events_customer_number_idx
    ON eventstore.events ((data ->> 'customer_number'))
    WHERE data ? 'customer_number';
CREATE INDEX IF NOT EXISTS events_correlation_id_idx
    ON eventstore.events ((metadata ->> 'correlation_id'));
